"""Find the chunks that answer a question: vector search over the collection (keyword fusion comes with the chain)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rag.config import Settings
from rag.errors import NookError
from rag.store import open_client, open_collection


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk with where it came from and how well it matched (cosine similarity)."""

    id: str
    text: str
    source: str
    page: int | None
    score: float
    metadata: dict[str, Any]


class EmptyIndexError(NookError):
    """There is nothing to search yet."""


def vector_search(settings: Settings, embedder: Any, question: str, k: int = 5, client: Any = None) -> list[Hit]:
    """The k chunks closest in meaning to the question."""
    client = client if client is not None else open_client(settings)
    collection = open_collection(client, settings.collection, embedder.name, embedder.dim, create=False)
    if collection is None or collection.count() == 0:
        raise EmptyIndexError(
            f"collection '{settings.collection}' is empty: index your notes first with `python -m ingest PATH`"
        )
    found = collection.query(
        query_embeddings=[embedder.embed_query(question)],
        n_results=k,
        include=["documents", "metadatas", "distances"],
    )
    hits = []
    for cid, text, meta, distance in zip(
        found["ids"][0], found["documents"][0], found["metadatas"][0], found["distances"][0], strict=True
    ):
        page = meta.get("page")
        hits.append(Hit(cid, text, str(meta.get("source", "")), int(page) if page else None, 1.0 - distance, meta))
    return hits
