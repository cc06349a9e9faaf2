"""LangChain's standard retriever test suite against NookRetriever over the real model and real Chroma."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import pytest
from langchain_tests.integration_tests import RetrieversIntegrationTests

from ingest.pipeline import IngestPipeline
from rag.config import Settings
from rag.retrieval import Searcher
from rag.retriever import NookRetriever
from tests.conftest import SAMPLES

pytestmark = pytest.mark.slow


@functools.cache
def sample_searcher() -> Searcher:
    from rag.embeddings import load_embedder

    data = Path(tempfile.mkdtemp(prefix="nook-retriever-"))
    settings = Settings(data_dir=data)
    embedder = load_embedder(settings.embedding_model)
    IngestPipeline(settings, embedder).sync([SAMPLES])
    return Searcher(settings, embedder)


class TestNookRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[NookRetriever]:
        return NookRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"searcher": sample_searcher()}

    @property
    def retriever_query_example(self) -> str:
        return "How many links does the bike chain have now?"
