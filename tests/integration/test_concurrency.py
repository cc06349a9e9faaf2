"""Several sessions asking at once through one shared NookService (as Streamlit's cache_resource shares it)."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ingest.pipeline import IngestPipeline
from rag.config import Settings
from rag.service import NookService
from tests.conftest import SAMPLES

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What is my sourdough starter called?",
    "How many links does the bike chain have now?",
    "What is the studio cat called?",
    "How much is the rent for the Marlow Road flat?",
    "When is my first physio appointment after the ankle sprain?",
    "Which train did I take to Changsha?",
    "What did I write in March 2024?",
    "What does the newsletter say about the street party?",
]


def test_eight_sessions_asking_at_once_all_get_answers(tmp_path: Path, real_embedder) -> None:
    settings = Settings(data_dir=tmp_path / "data", max_tokens=8, n_ctx=2048, retrieval_k=2, answer_cache=False)
    IngestPipeline(settings, real_embedder).sync([SAMPLES])
    service = NookService(settings, embedder=real_embedder)  # the real bundled model, loaded once, shared

    def session(question: str) -> tuple[str, list[str], int]:
        stream = service.ask(question)
        pieces = list(stream)
        return "".join(pieces), [s.file_name for s in stream.result.sources], len(pieces)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(session, QUESTIONS))
    assert len(results) == 8
    for question, (answer, sources, _) in zip(QUESTIONS, results, strict=True):
        assert answer.strip(), question
        assert sources, question
    assert "sourdough.md" in results[0][1]
    assert "bike-maintenance-log.pdf" in results[1][1]
