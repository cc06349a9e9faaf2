"""The answering chain's logic with fake LLMs (langchain_core fakes) over real embedded Chroma."""

from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import FakeListLLM, FakeStreamingListLLM
from langchain_core.language_models.llms import LLM

from ingest.pipeline import IngestPipeline
from rag.chain import NOT_FOUND_EN, NOT_FOUND_ZH, AnswerChain
from rag.config import Settings
from rag.errors import BackendError, NookError
from rag.llms import LLMInfo, build_llm
from rag.service import NookService
from tests.fakes import HashEmbedder


@pytest.fixture
def service(settings: Settings, samples_copy: Path) -> NookService:
    settings = settings.model_copy(update={"llm_backend": "fake", "relevance_floor": -1.0})
    embedder = HashEmbedder()
    IngestPipeline(settings, embedder).sync([samples_copy])
    return NookService(settings, embedder=embedder)


def info(llm: Any, family: str = "generic") -> LLMInfo:
    return LLMInfo(llm=llm, backend="fake", model="fake", chat=False, family=family)


def test_answer_streams_in_pieces_with_numbered_sources(service: NookService) -> None:
    stream = service.ask("Which train did I take to Changsha? G1372")
    pieces = list(stream)
    assert len(pieces) > 5  # the fake streams one character at a time
    result = stream.result
    assert result.answer == "".join(pieces) == "This is a fake answer from Nook [1]."
    assert [s.number for s in result.sources] == list(range(1, len(result.sources) + 1))
    assert result.cited == [1]
    assert result.found and not result.cached


def test_repeated_question_comes_from_the_cache(service: NookService) -> None:
    first = service.ask("What is my sourdough starter called?")
    first_text = first.text()
    second = service.ask("What is my sourdough starter called?")
    assert second.text() == first_text and second.result.cached
    assert [s.id for s in second.result.sources] == [s.id for s in first.result.sources]


def test_not_found_is_its_own_state_and_calls_no_model(settings: Settings, samples_copy: Path) -> None:
    settings = settings.model_copy(update={"relevance_floor": 0.99})
    embedder = HashEmbedder()
    IngestPipeline(settings, embedder).sync([samples_copy])

    class Exploding(LLM):
        @property
        def _llm_type(self) -> str:
            return "exploding"

        def _call(self, prompt: str, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> str:
            raise AssertionError("the model must not be called when nothing was found")

    service = NookService(settings, embedder=embedder, llm_info=info(Exploding()))
    english = service.ask("What is the boiling point of tungsten?")
    assert english.text() == NOT_FOUND_EN and not english.result.found and english.result.sources == []
    chinese = service.ask("钨的沸点是多少？")
    assert chinese.text() == NOT_FOUND_ZH


def test_follow_up_is_condensed_before_retrieval(service: NookService) -> None:
    searched: list[str] = []
    llm = FakeListLLM(responses=["Which train number did I take on 3 May 2024?", "You took G1372 [1]."])
    chain = AnswerChain(
        info(llm),
        search=lambda q, f: (searched.append(q), service.search(q, filters=f))[1],
        n_ctx=4096,
        max_tokens=64,
        params={},
    )
    stream = chain.ask("And which train was it?", history=[("Where did I go in May?", "To Changsha [1].")])
    assert stream.text() == "You took G1372 [1]."
    assert searched == ["Which train number did I take on 3 May 2024?"]
    assert stream.result.standalone_question == searched[0]


def test_rambling_condensation_falls_back_to_the_question(service: NookService) -> None:
    llm = FakeListLLM(responses=["x" * 2000, "ok"])
    chain = AnswerChain(info(llm), search=lambda q, f: service.search(q, filters=f), n_ctx=4096, max_tokens=64, params={})
    assert chain.standalone_question("Which train?", [("a", "b")]) == "Which train?"


def test_context_is_cut_from_the_lowest_ranked_chunk(service: NookService) -> None:
    from rag.chain import format_context
    from rag.retrieval import Hit

    llm = FakeStreamingListLLM(responses=["fine"])
    question = "What is my sourdough starter called?"
    wide = AnswerChain(info(llm), lambda q, f: service.search(q, k=5, filters=f), 100_000, 64, {})
    all_sources = wide.ask(question).result.sources
    assert len(all_sources) == 5
    hits = service.search(question, k=5).hits
    full = wide.count_tokens(wide.answer_prompt.format(context=format_context(hits), question=question))
    # One token short of room for all five chunks plus the answer: the fifth chunk must go, nothing else.
    narrow = AnswerChain(info(llm), lambda q, f: service.search(q, k=5, filters=f), full + 64 + 8 - 1, 64, {})
    stream = narrow.ask(question)
    kept = stream.result.sources
    assert [s.id for s in kept] == [s.id for s in all_sources[:4]]
    assert stream.result.dropped_chunks == 1
    assert isinstance(hits[0], Hit)


def test_question_too_long_for_the_context_is_an_error(service: NookService) -> None:
    llm = FakeStreamingListLLM(responses=["fine"])
    chain = AnswerChain(info(llm), lambda q, f: service.search(q, filters=f), 300, 64, {})
    with pytest.raises(NookError, match="too long"):
        chain.ask("sourdough " * 400)


def test_server_down_becomes_one_line(service: NookService) -> None:
    class Refusing(LLM):
        @property
        def _llm_type(self) -> str:
            return "refusing"

        def _call(self, prompt: str, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> str:
            raise ConnectionRefusedError(111, "Connection refused")

    chain = AnswerChain(info(Refusing()), lambda q, f: service.search(q, filters=f), 4096, 64, {})
    with pytest.raises(BackendError) as caught:
        chain.ask("What is my sourdough starter called?").text()
    assert "did not answer" in str(caught.value) and "\n" not in str(caught.value)


def test_chat_backend_gets_messages_without_special_tokens(service: NookService, settings: Settings) -> None:
    chat = build_llm(settings.model_copy(update={"llm_backend": "fake", "prompt_family": "llama2"}), mode="chat")
    chain = AnswerChain(chat, lambda q, f: service.search(q, filters=f), 4096, 64, {})
    rendered = chain.answer_prompt.format(context="[1] x", question="q")
    assert "[INST]" not in rendered and "<<SYS>>" not in rendered
    assert chain.ask("What is my sourdough starter called?").text() == "This is a fake answer from Nook [1]."
