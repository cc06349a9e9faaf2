"""The Nook searcher as a LangChain `BaseRetriever`, for chains and for LangChain's standard retriever tests."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from rag.retrieval import Hit, SearchFilters, Searcher


def hit_to_document(hit: Hit) -> Document:
    """A LangChain document carrying the hit's metadata, id and scores."""
    metadata = {**hit.metadata, "id": hit.id, "score": hit.score, "fused_score": hit.fused}
    return Document(page_content=hit.text, metadata=metadata, id=hit.id)


class NookRetriever(BaseRetriever):
    """Hybrid (vector + BM25) retrieval with folder and date filters; `k` can be set per call."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    searcher: Searcher
    k: int = 5
    filters: SearchFilters = SearchFilters()
    keyword: bool = True

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k = int(kwargs.get("k", self.k))
        result = self.searcher.search(
            query, k=k, filters=kwargs.get("filters", self.filters), keyword=kwargs.get("keyword", self.keyword)
        )
        return [hit_to_document(hit) for hit in result.hits]
