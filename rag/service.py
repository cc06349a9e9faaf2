"""The one entry point the UI and the command lines use: search, ask, ingest, index stats, documents."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.errors import NookError
from rag.privacy import enforce_offline
from rag.retrieval import SearchFilters, SearchResult, Searcher


@dataclass(frozen=True)
class IndexStats:
    """What the index holds."""

    collection: str
    documents: int
    chunks: int
    failed: int
    last_sync: float | None
    embedding_model: str


class NookService:
    """Holds the embedding model, the searcher and the LLM for one Settings; safe to share between threads."""

    def __init__(self, settings: Settings, embedder: Any = None, llm_info: Any = None) -> None:
        enforce_offline()
        self.settings = settings
        if embedder is None:
            from rag.embeddings import LazyEmbedder

            embedder = LazyEmbedder(
                settings.embedding_model,
                batch_size=settings.embedding_batch_size,
                precision=settings.embedding_precision,
            )
        self.embedder = embedder
        self._llm_info = llm_info
        self._searcher: Searcher | None = None
        self._chain: Any = None
        self._lock = threading.RLock()
        self._generate_lock = threading.Lock()  # one generation at a time: llama.cpp contexts are not re-entrant

    # ------------------------------------------------------------------ parts, built on first use

    @property
    def searcher(self) -> Searcher:
        """The hybrid searcher over the configured collection."""
        with self._lock:
            if self._searcher is None:
                self._searcher = Searcher(self.settings, self.embedder)
            return self._searcher

    @property
    def llm_info(self) -> Any:
        """The configured LLM backend, built (and its model loaded) on first use."""
        with self._lock:
            if self._llm_info is None:
                from rag.llms import build_llm

                self._llm_info = build_llm(self.settings)
            return self._llm_info

    @property
    def chain(self) -> Any:
        """The answering chain for the configured model."""
        with self._lock:
            if self._chain is None:
                from rag.answer_cache import AnswerCache
                from rag.chain import AnswerChain

                s = self.settings
                params = {
                    "temperature": s.temperature,
                    "top_p": s.top_p,
                    "top_k": s.top_k,
                    "repeat_penalty": s.repeat_penalty,
                    "max_tokens": s.max_tokens,
                }
                self._chain = AnswerChain(
                    self.llm_info,
                    search=lambda q, f: self.search(q, filters=f),
                    n_ctx=s.n_ctx,
                    max_tokens=s.max_tokens,
                    params=params,
                    cache=AnswerCache(s.data_dir / "answers.sqlite3") if s.answer_cache else None,
                )
            return self._chain

    # ------------------------------------------------------------------ operations

    def search(self, question: str, k: int | None = None, filters: SearchFilters | None = None) -> SearchResult:
        """The chunks that best match the question."""
        return self.searcher.search(question, k=k, filters=filters)

    def ask(self, question: str, history: Sequence[tuple[str, str]] = (), filters: SearchFilters | None = None) -> Any:
        """An AnswerStream: iterate it for the streamed answer, then read `.result` for the sources."""
        if not question.strip():
            raise NookError("the question is empty")
        chain = self.chain
        return _Serialized(lambda: chain.ask(question, history, filters), self._generate_lock)

    def ingest(
        self,
        paths: Sequence[Path],
        on_progress: Callable[[int, int, int], None] | None = None,
        dry_run: bool = False,
    ) -> Any:
        """Sync folders or files into the collection (see ingest.pipeline)."""
        from ingest.pipeline import IngestPipeline

        pipeline = IngestPipeline(self.settings, self.embedder, client=self.searcher.client)
        return pipeline.sync(list(paths), dry_run=dry_run, on_progress=on_progress)

    def stats(self) -> IndexStats:
        """Documents, chunks, failures and the time of the last sync."""
        from ingest.manifest import Manifest
        from rag.store import open_collection

        collection = open_collection(
            self.searcher.client, self.settings.collection, self.embedder.name, self.embedder.dim, create=False
        )
        with Manifest(self.settings.manifest_path, self.settings.store_key, self.settings.collection) as manifest:
            files = manifest.files()
            return IndexStats(
                collection=self.settings.collection,
                documents=len(files),
                chunks=collection.count() if collection is not None else 0,
                failed=len(manifest.failures()),
                last_sync=manifest.last_sync(),
                embedding_model=self.embedder.name,
            )


class _Serialized:
    """An answer stream that starts, and holds the generation lock, only while it is being read.

    Condensing the question and generating the answer both run the model, so both happen under the lock.
    `result` is None until iteration has started.
    """

    def __init__(self, start: Callable[[], Any], lock: threading.Lock) -> None:
        self._start = start
        self._lock = lock
        self.result: Any = None

    def __iter__(self) -> Any:
        with self._lock:
            stream = self._start()
            self.result = stream.result
            yield from stream

    def text(self) -> str:
        """Consume the stream and return the whole answer."""
        for _ in self:
            pass
        return self.result.answer
