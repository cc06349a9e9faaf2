"""The llamafile backend against a real llama-server (what a llamafile runs) serving the bundled SmolLM2 GGUF."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.chain import AnswerChain
from rag.config import Settings
from rag.errors import BackendError
from rag.llms import LLMInfo, build_llm
from rag.models import bundled_gguf, llamafile_family
from rag.prompts import select_prompt
from rag.retrieval import Hit, SearchResult
from rag.service import NookService
from tests.integration.helpers import free_port
from tests.integration.servers import QUESTION, SOURDOUGH, LlamaServer, index_samples, top_files

pytestmark = pytest.mark.slow

CONTEXT = "[1] (tea.md)\nGreen tea steeps for two minutes at 80 degrees.\n\n[2] (coffee.md)\nEspresso takes 25 s."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with LlamaServer(bundled_gguf(), log, n_ctx=2048, threads=2) as running:
        yield running


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory, real_embedder) -> Path:
    return index_samples(tmp_path_factory.mktemp("index"), real_embedder)


def llamafile_settings(data_dir: Path, url: str, **extra) -> Settings:
    return Settings(
        data_dir=data_dir,
        llm_backend="llamafile",
        llm_base_url=url,
        max_tokens=24,
        n_ctx=2048,  # what the server was started with
        temperature=0.0,
        **extra,
    )


@pytest.fixture(scope="module")
def llamafile(server: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> LLMInfo:
    return build_llm(llamafile_settings(tmp_path_factory.mktemp("data"), server.url))


def test_prompt_family_is_read_from_the_servers_props(llamafile: LLMInfo, server: LlamaServer) -> None:
    assert llamafile_family(server.url) == "chatml"  # /props carries SmolLM2's ChatML chat template
    assert (llamafile.backend, llamafile.chat, llamafile.family, llamafile.model) == (
        "llamafile", False, "chatml", server.url
    )  # fmt: skip
    text = select_prompt("answer", llamafile).format(context=CONTEXT, question="How long does green tea steep?")
    assert text.startswith("<|im_start|>system") and "[INST]" not in text


def test_stream_yields_several_tokens(llamafile: LLMInfo) -> None:
    prompt = select_prompt("answer", llamafile).invoke(
        {"context": CONTEXT, "question": "How long does green tea steep?"}
    )
    chunks = list(llamafile.llm.stream(prompt))
    tokens = [chunk for chunk in chunks if chunk]  # the server's blank SSE separator lines come through as ""
    assert len(tokens) > 1, chunks
    text = "".join(tokens)
    assert text.strip()
    assert "<|im_end|>" not in text and "<|im_start|>" not in text  # it stopped at the end of its turn


def test_answer_streams_through_the_chain_with_sources(server: LlamaServer, index_dir: Path, real_embedder) -> None:
    service = NookService(llamafile_settings(index_dir, server.url), embedder=real_embedder)
    stream = service.ask(QUESTION)
    pieces = list(stream)
    assert len(pieces) > 1, pieces
    assert all(pieces)
    assert stream.result.found
    assert any(path.endswith(SOURDOUGH) for path in top_files(stream.result.sources)), stream.result.sources
    assert stream.result.answer.strip() and stream.result.answer == "".join(pieces)
    assert service.llm_info.family == "chatml"


def test_stopped_server_is_a_one_line_backend_error(index_dir: Path, real_embedder) -> None:
    # How fast it comes is measured by bench/answer.py (docs/BENCHMARKS.md); tests assert no timings.
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    service = NookService(llamafile_settings(index_dir, url, answer_cache=False), embedder=real_embedder)
    with pytest.raises(BackendError) as err:
        list(service.ask(QUESTION))
    message = str(err.value)
    assert "\n" not in message
    assert url in message and "is it running?" in message, message


def test_server_error_is_a_backend_error_not_the_answer(llamafile: LLMInfo) -> None:
    # Nook is told n_ctx=8192 but the server holds 2048: the fitted prompt (~2,700 real tokens) passes Nook's
    # check and the server refuses it.
    paragraph = "Green tea steeps for two minutes at 80 degrees; black tea takes four minutes at boiling point. " * 10
    hits = [Hit(id=str(n), text=paragraph, source=f"notes/tea-{n}.md", page=None, score=0.9, metadata={})
            for n in range(12)]  # fmt: skip
    chain = AnswerChain(
        llamafile, search=lambda q, f: SearchResult(hits=hits, found=True), n_ctx=8192, max_tokens=24, params={}
    )
    try:
        answer = "".join(chain.ask("How long does green tea steep?"))
    except BackendError as exc:
        message = str(exc)
    else:
        raise AssertionError(f"the server's error came back as the answer: {answer[:300]}")
    assert "context" in message and "\n" not in message, message
