"""Nook's Ollama backend against a server that speaks Ollama's API.

By default that server is tests/ollama_server.py, started here on 127.0.0.1 and backed by the bundled SmolLM2 GGUF
through llama-cpp-python (no Ollama server can be installed on the test machines). With NOOK_TEST_OLLAMA_URL set
(and NOOK_TEST_OLLAMA_MODEL naming a pulled ChatML model, default smollm2:135m) the same tests run against a real
Ollama; pytest-socket only lets them reach loopback addresses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ollama
import pytest

from rag.config import Settings
from rag.errors import BackendError
from rag.llms import build_llm
from rag.models import bundled_gguf
from rag.prompts import select_prompt
from tests.conftest import ROOT, SAMPLES
from tests.integration.helpers import free_port, stop_process

pytestmark = pytest.mark.slow

MODEL_NAME = "smollm2:135m"
STARTUP_TIMEOUT = 60.0
CONTEXT = "[1] (tea.md)\nGreen tea steeps for two minutes at 80 degrees.\n\n[2] (coffee.md)\nEspresso takes 25 s."


@dataclass(frozen=True)
class Server:
    url: str
    model: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The Ollama-API server under test: a real Ollama when NOOK_TEST_OLLAMA_URL is set, else the test fixture."""
    if url := os.environ.get("NOOK_TEST_OLLAMA_URL"):
        yield Server(url.rstrip("/"), os.environ.get("NOOK_TEST_OLLAMA_MODEL", MODEL_NAME))
        return
    port = free_port()
    log_path = tmp_path_factory.mktemp("ollama") / "server.log"
    command = [sys.executable, "-m", "tests.ollama_server", "--port", str(port), "--model", str(bundled_gguf()),
               "--name", MODEL_NAME]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                   stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"the Ollama test server exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/api/version", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the Ollama test server did not answer within {STARTUP_TIMEOUT:.0f} s:\n"
                            f"{log_path.read_text()}")
            time.sleep(0.2)
        yield Server(url, MODEL_NAME)
    finally:
        stop_process(process)


def ollama_settings(data_dir: Path, server: Server, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir, "llm_backend": "ollama", "llm_model": server.model, "llm_base_url": server.url,
        "max_tokens": 24, "n_ctx": 2048, "temperature": 0.0, **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def indexed_dir(tmp_path_factory: pytest.TempPathFactory, real_embedder) -> Path:
    """A data dir holding the bundled samples, indexed once with the real embedding model."""
    from ingest.pipeline import IngestPipeline

    data_dir = tmp_path_factory.mktemp("nookdata")
    with pytest.MonkeyPatch.context() as env:  # module scope runs before conftest's per-test NOOK_* cleanup
        for key in [k for k in os.environ if k.startswith("NOOK_") and not k.startswith("NOOK_TEST_")]:
            env.delenv(key)
        report = IngestPipeline(Settings(data_dir=data_dir), real_embedder).sync([SAMPLES])
    assert report.chunks_added > 0 and report.failed == 0, report.failures
    return data_dir


# ---------------------------------------------------------------------- the wire format, read by ollama's own types


def test_list_and_show_parse_with_ollama_client_types(server: Server) -> None:
    client = ollama.Client(host=server.url)

    listed = client.list()
    assert isinstance(listed, ollama.ListResponse)
    entry = next(m for m in listed.models if m.model == server.model)
    assert entry.size and entry.size > 0 and entry.digest and entry.modified_at is not None
    assert entry.details is not None and entry.details.format == "gguf"
    assert entry.details.family and entry.details.parameter_size and entry.details.quantization_level

    shown = client.show(server.model)
    assert isinstance(shown, ollama.ShowResponse)
    assert shown.template and "<|im_start|>" in shown.template
    assert shown.modelfile and shown.parameters is not None
    assert shown.details is not None and shown.details.family == entry.details.family
    assert shown.modelinfo and shown.modelinfo["general.architecture"] == entry.details.family


def test_unknown_model_is_a_404_response_error(server: Server) -> None:
    client = ollama.Client(host=server.url)
    for call in (lambda: client.show("no-such-model:1b"),
                 lambda: list(client.chat(model="no-such-model:1b", messages=[{"role": "user", "content": "hi"}],
                                          stream=True))):
        with pytest.raises(ollama.ResponseError) as err:
            call()
        assert err.value.status_code == 404
        assert "not found" in err.value.error


def test_generate_streams_ndjson_that_parses_as_generate_responses(server: Server) -> None:
    client = ollama.Client(host=server.url)
    chunks = list(client.generate(model=server.model, prompt="Say hello", stream=True,
                                  options={"num_predict": 8, "temperature": 0}))
    assert all(isinstance(c, ollama.GenerateResponse) for c in chunks)
    *pieces, final = chunks
    assert len([p for p in pieces if p.response]) > 1
    assert all(p.done is False and p.model == server.model and p.created_at for p in pieces)
    assert final.done is True and final.done_reason in ("stop", "length")
    assert final.response == ""  # streamed: the text came in the pieces
    assert final.eval_count is not None and 0 < final.eval_count <= 8  # num_predict honoured
    assert final.prompt_eval_count and final.total_duration and final.eval_duration is not None


def test_chat_streams_ndjson_that_parses_as_chat_responses(server: Server) -> None:
    client = ollama.Client(host=server.url)
    chunks = list(client.chat(model=server.model, messages=[{"role": "user", "content": "Say hello"}], stream=True,
                              options={"num_predict": 8, "temperature": 0}))
    assert all(isinstance(c, ollama.ChatResponse) for c in chunks)
    *pieces, final = chunks
    assert len([p for p in pieces if p.message.content]) > 1
    assert all(p.message.role == "assistant" and p.done is False for p in pieces)
    assert final.done is True and final.done_reason in ("stop", "length")
    assert final.eval_count is not None and 0 < final.eval_count <= 8
    assert final.prompt_eval_count and final.total_duration


def test_raw_generate_skips_the_template_and_stream_false_gives_one_object(server: Server) -> None:
    client = ollama.Client(host=server.url)
    options = {"num_predict": 4, "temperature": 0}
    raw = client.generate(model=server.model, prompt="Say hello", raw=True, stream=False, options=options)
    templated = client.generate(model=server.model, prompt="Say hello", stream=False, options=options)
    for answer in (raw, templated):
        assert isinstance(answer, ollama.GenerateResponse) and answer.done is True and answer.response
    # The template wraps the prompt in ChatML turns (and SmolLM2's default system prompt); raw mode does not.
    assert raw.prompt_eval_count and templated.prompt_eval_count
    assert raw.prompt_eval_count < templated.prompt_eval_count


# ---------------------------------------------------------------------- through Nook's backend registry


def test_chat_mode_streams_through_chat_ollama(server: Server, tmp_path: Path) -> None:
    from langchain_ollama import ChatOllama

    info = build_llm(ollama_settings(tmp_path, server))
    assert isinstance(info.llm, ChatOllama) and (info.backend, info.chat) == ("ollama", True)
    assert info.family == "chatml"  # read from /api/show's template
    chunks = list(info.llm.stream("Say hello"))
    assert len([c for c in chunks if c.content]) > 1
    total = sum(chunks[1:], chunks[0])
    assert total.content.strip()
    assert total.usage_metadata is not None and 0 < total.usage_metadata["output_tokens"] <= 24  # max_tokens


def test_completion_mode_streams_raw_chatml_prompts(server: Server, tmp_path: Path) -> None:
    from langchain_ollama import OllamaLLM

    info = build_llm(ollama_settings(tmp_path, server), mode="completion")
    assert isinstance(info.llm, OllamaLLM) and (info.chat, info.family) == (False, "chatml")
    prompt = select_prompt("answer", info).format(context=CONTEXT, question="How long does green tea steep?")
    assert "<|im_start|>" in prompt  # Nook formats the turns itself; the server must not wrap them again
    chunks = list(info.llm.stream(prompt))
    assert len([c for c in chunks if c]) > 1
    text = "".join(chunks)
    assert text.strip()
    assert "<|im_start|>" not in text and "<|im_end|>" not in text


# ---------------------------------------------------------------------- the whole chain


def test_ask_streams_an_answer_with_sources(server: Server, indexed_dir: Path, real_embedder) -> None:
    from rag.service import NookService

    settings = ollama_settings(indexed_dir, server, retrieval_k=3, answer_cache=False)
    service = NookService(settings, embedder=real_embedder)
    stream = service.ask("What is my sourdough starter called?")
    pieces = list(stream)
    assert len(pieces) > 1 and "".join(pieces).strip()
    result = stream.result
    assert result.found and result.answer == "".join(pieces)
    assert result.sources
    assert any(Path(s.source).as_posix().endswith("notes/sourdough.md") for s in result.sources[:3]), [
        s.source for s in result.sources
    ]


def test_stopped_server_is_a_one_line_backend_error(indexed_dir: Path, real_embedder) -> None:
    # How fast the error comes is measured by bench/answer.py (docs/BENCHMARKS.md); tests assert no timings.
    from rag.service import NookService

    dead = Server(f"http://127.0.0.1:{free_port()}", MODEL_NAME)  # nothing listens there
    settings = ollama_settings(indexed_dir, dead, retrieval_k=3, answer_cache=False)

    info = build_llm(settings)  # the /api/show lookup fails and falls back to the generic prompt
    assert info.family == "generic"

    service = NookService(settings, embedder=real_embedder, llm_info=info)
    assert service.search("sourdough starter").found  # retrieval works: the failure below is the backend's
    with pytest.raises(BackendError) as err:
        list(service.ask("What is my sourdough starter called?"))
    message = str(err.value)
    assert "\n" not in message
    assert "ollama" in message and dead.url in message  # says which backend and where


def test_unknown_model_name_is_a_one_line_backend_error(server: Server, indexed_dir: Path, real_embedder) -> None:
    from rag.service import NookService

    settings = ollama_settings(indexed_dir, Server(server.url, "no-such-model:1b"), answer_cache=False)
    service = NookService(settings, embedder=real_embedder)
    with pytest.raises(BackendError) as err:
        list(service.ask("What is my sourdough starter called?"))
    message = str(err.value)
    assert "\n" not in message and "no-such-model:1b" in message and "not found" in message
