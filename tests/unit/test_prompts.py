"""Prompt templates and the model-aware prompt selector."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import FakeStreamingListLLM
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate

import langchain_community.llms
from rag.config import Settings
from rag.errors import SettingsError
from rag.llms import LLMInfo, build_llm
from rag.models import (
    PROMPT_FAMILIES,
    bundled_gguf,
    family_from_template,
    fetch_json,
    gguf_family,
    llamafile_family,
    ollama_family,
)
from rag.prompts import PURPOSE_VARIABLES, build_selector, load_prompts, model_family, select_prompt

MARKERS = {
    "llama2": ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"),
    "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "generic": (),
}
ALL_MARKERS = {marker for markers in MARKERS.values() for marker in markers}
VALUES = {
    "context": "[1] notes/tea.md: Green tea steeps for two minutes.",
    "question": "How long does green tea steep?",
    "chat_history": "Human: What about black tea?\nAI: Four minutes [1].",
}
LLAMA2_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'system' %}"
    "{{ '<<SYS>>\\n' + message['content'] + '\\n<</SYS>>\\n\\n' }}{% else %}"
    "{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"
)


def values_for(purpose: str) -> dict[str, str]:
    return {name: VALUES[name] for name in PURPOSE_VARIABLES[purpose]}


@pytest.fixture(scope="module")
def llama2_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 with a Llama-2 chat template written into its GGUF metadata (a copy; the original is untouched)."""
    target = tmp_path_factory.mktemp("gguf") / "smollm2-llama2-template.gguf"
    subprocess.run(
        [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force", "--chat-template", LLAMA2_TEMPLATE]
        + [str(bundled_gguf()), str(target)],
        check=True,
        capture_output=True,
    )
    return target


class StubLlamaCpp(FakeStreamingListLLM):
    """Stands in for LlamaCpp so the real llamacpp factory runs without loading weights."""

    model_path: str = ""
    received: dict[str, Any] = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(responses=["stub"], model_path=kwargs["model_path"], received=kwargs)


@pytest.fixture
def stub_llamacpp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(langchain_community.llms, "LlamaCpp", StubLlamaCpp, raising=False)


class PropsHandler(BaseHTTPRequestHandler):
    """Answers like llama-server's /props."""

    def do_GET(self) -> None:
        body = json.dumps({"chat_template": LLAMA2_TEMPLATE}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def json_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), PropsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# Templates.


@pytest.mark.parametrize("purpose", sorted(PURPOSE_VARIABLES))
def test_every_template_of_a_purpose_has_the_same_variables(purpose: str) -> None:
    prompts = load_prompts(purpose)
    assert set(prompts.raw) == set(PROMPT_FAMILIES)
    variables = {name: frozenset(t.input_variables) for name, t in prompts.raw.items()}
    variables["chat"] = frozenset(prompts.chat.input_variables)
    assert set(variables.values()) == {PURPOSE_VARIABLES[purpose]}


@pytest.mark.parametrize("purpose", sorted(PURPOSE_VARIABLES))
@pytest.mark.parametrize("family", PROMPT_FAMILIES)
def test_rendered_prompt_has_its_own_special_tokens_and_no_others(family: str, purpose: str) -> None:
    text = load_prompts(purpose).raw[family].format(**values_for(purpose))
    for marker in MARKERS[family]:
        assert marker in text
    for marker in ALL_MARKERS - set(MARKERS[family]):
        assert marker not in text
    for value in values_for(purpose).values():
        assert value in text
    assert "{" not in text and "}" not in text  # no slot left unfilled


@pytest.mark.parametrize("purpose", sorted(PURPOSE_VARIABLES))
def test_chat_prompt_is_messages_without_special_tokens(purpose: str) -> None:
    messages = load_prompts(purpose).chat.format_messages(**values_for(purpose))
    assert [m.type for m in messages] == ["system", "human"]
    for message in messages:
        assert not any(marker in message.content for marker in ALL_MARKERS)
    assert VALUES["question"] in messages[1].content


def test_answer_prompt_asks_for_citations_and_for_not_found() -> None:
    text = load_prompts("answer").raw["generic"].format(**values_for("answer"))
    assert "[n]" in text
    assert "could not find it in the documents" in text


def test_prompt_ends_where_the_model_starts_answering() -> None:
    assert load_prompts("answer").raw["chatml"].template.endswith("<|im_start|>assistant\n")
    assert load_prompts("answer").raw["llama2"].template.endswith("[/INST]")
    assert load_prompts("answer").raw["llama3"].template.endswith("<|end_header_id|>\n\n")


def test_bad_template_folder_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read prompt template") as err:
        load_prompts("answer", tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(SettingsError, match="unknown prompt purpose 'summary'"):
        load_prompts("summary")


def test_template_with_a_wrong_variable_is_rejected(tmp_path: Path) -> None:
    source = Path(__file__).resolve().parents[2] / "prompts"
    for path in source.glob("*.txt"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "llama3.txt").write_text("{system}\n{user}\n{extra}\n")
    with pytest.raises(SettingsError, match=r"'llama3' for 'answer' has variables \['context', 'extra', 'question'\]"):
        load_prompts("answer", tmp_path)


# Family detection.


@pytest.mark.parametrize(
    ("template", "family"),
    [
        ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}", "chatml"),
        ("{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}", "llama3"),
        (LLAMA2_TEMPLATE, "llama2"),
        ("[INST] {{ if .System }}{{ .System }} {{ end }}{{ .Prompt }} [/INST]", "llama2"),  # Ollama, Go syntax
        ("{{ .System }}<|start_header_id|>user<|end_header_id|>{{ .Prompt }}<|eot_id|>", "llama3"),
        ("<start_of_turn>user\n{{ content }}<end_of_turn>", "generic"),
        ("", "generic"),
        (None, "generic"),
    ],
)
def test_family_from_template(template: str | None, family: str) -> None:
    assert family_from_template(template) == family


def test_smollm2_is_llama_architecture_but_chatml() -> None:
    from gguf import GGUFReader

    path = bundled_gguf()
    assert GGUFReader(str(path)).get_field("general.architecture").contents() == "llama"
    assert gguf_family(path) == "chatml"


def test_ollama_family_from_api_show_with_injected_fetch() -> None:
    calls: list[tuple[str, Any, float]] = []

    def fetch(url: str, body: Any, timeout: float) -> dict[str, Any]:
        calls.append((url, body, timeout))
        return {"template": "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>{{ end }}"}

    assert ollama_family("http://127.0.0.1:11434/", "qwen2.5:0.5b", fetch=fetch) == "chatml"
    assert calls == [("http://127.0.0.1:11434/api/show", {"model": "qwen2.5:0.5b"}, 2.0)]


@pytest.mark.parametrize("failure", [TimeoutError("timed out"), ConnectionRefusedError(), ValueError("bad json")])
def test_server_lookups_fall_back_to_generic(failure: Exception) -> None:
    def fetch(url: str, body: Any, timeout: float) -> dict[str, Any]:
        raise failure

    assert ollama_family("http://127.0.0.1:11434", "llama3.2", fetch=fetch) == "generic"
    assert llamafile_family("http://127.0.0.1:8080", fetch=fetch) == "generic"


def test_llamafile_family_from_props_over_loopback(json_server: str) -> None:
    assert fetch_json(f"{json_server}/props")["chat_template"] == LLAMA2_TEMPLATE
    assert llamafile_family(json_server) == "llama2"


def test_unreachable_server_falls_back_to_generic_quickly(closed_port_url: str) -> None:
    assert llamafile_family(closed_port_url, timeout=0.5) == "generic"
    assert ollama_family(closed_port_url, "llama3.2", timeout=0.5) == "generic"


# Selection.


@pytest.mark.parametrize("purpose", sorted(PURPOSE_VARIABLES))
@pytest.mark.parametrize("family", PROMPT_FAMILIES)
def test_selector_picks_the_raw_template_of_the_models_family(family: str, purpose: str) -> None:
    info = build_llm(Settings(llm_backend="fake", prompt_family=family))
    assert model_family(info.llm) == family
    assert select_prompt(purpose, info) == load_prompts(purpose).raw[family]


@pytest.mark.parametrize("family", PROMPT_FAMILIES)
def test_chat_models_get_messages_whatever_their_family(family: str) -> None:
    info = build_llm(Settings(llm_backend="fake", prompt_family=family), mode="chat")
    prompt = select_prompt("answer", info)
    assert isinstance(prompt, ChatPromptTemplate)
    answer = info.llm.invoke(prompt.invoke(values_for("answer")))
    assert answer.content


def test_model_that_says_nothing_gets_the_generic_prompt() -> None:
    plain = FakeStreamingListLLM(responses=["x"])
    assert model_family(plain) == "generic"
    assert build_selector("answer").get_prompt(plain) == load_prompts("answer").raw["generic"]


def test_smollm2_never_receives_inst(stub_llamacpp: None) -> None:
    info = build_llm(Settings(llm_backend="llamacpp"))  # the bundled SmolLM2, through the real factory
    assert (info.family, info.chat) == ("chatml", False)
    for purpose in PURPOSE_VARIABLES:
        text = select_prompt(purpose, info).format(**values_for(purpose))
        assert text.startswith("<|im_start|>system\n")
        assert "[INST]" not in text and "<<SYS>>" not in text


def test_smollm2_copy_with_llama2_template_receives_llama2_prompt(llama2_copy: Path, stub_llamacpp: None) -> None:
    info = build_llm(Settings(llm_backend="llamacpp", llm_model=str(llama2_copy)))
    assert info.family == "llama2"
    text = select_prompt("answer", info).format(**values_for("answer"))
    assert text.startswith("[INST] <<SYS>>\n")
    assert "<|im_start|>" not in text


def test_prompt_family_setting_overrides_the_model(stub_llamacpp: None) -> None:
    info = build_llm(Settings(llm_backend="llamacpp", prompt_family="llama3"))
    assert info.family == "llama3"
    assert select_prompt("answer", info) == load_prompts("answer").raw["llama3"]


def test_selected_prompt_streams_through_the_fake_backend() -> None:
    info = build_llm(Settings(llm_backend="fake", llm_model=str(bundled_gguf())))
    prompt = select_prompt("answer", info)
    assert isinstance(prompt, PromptTemplate) and info.family == "chatml"
    chunks = list(info.llm.stream(prompt.invoke(values_for("answer"))))
    assert len(chunks) > 1
    assert "".join(chunks) == "This is a fake answer from Nook [1]."


def test_llminfo_built_by_hand_records_its_family_on_the_model() -> None:
    info = LLMInfo(llm=FakeStreamingListLLM(responses=["x"]), backend="fake", model="fake", chat=False, family="llama3")
    assert model_family(info.llm) == "llama3"
    assert select_prompt("answer", info) == load_prompts("answer").raw["llama3"]
