"""The one entry point the UI and the command lines use: search, ask, ingest, index stats, documents."""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.errors import NookError
from rag.privacy import enforce_offline
from rag.retrieval import Searcher, SearchFilters, SearchResult
from rag.store import store_failures


@dataclass(frozen=True)
class IndexStats:
    """What the index holds."""

    collection: str
    documents: int
    chunks: int
    failed: int
    last_sync: float | None
    embedding_model: str


@dataclass(frozen=True)
class DocumentInfo:
    """One indexed file, as the document list shows it."""

    path: str
    file_name: str
    folder: str
    chunks: int
    size: int
    ingested_at: float


UPLOADS_FOLDER = "uploads"
_UNSAFE_NAME_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"|?*\\/]')
_MAX_NAME_BYTES = 200
_write_locks: dict[str, threading.Lock] = {}
_write_locks_guard = threading.Lock()


@contextmanager
def _index_write_lock(settings: Settings) -> Iterator[None]:
    """One writer at a time per index (data dir + collection) in this process: syncs and removals never interleave."""
    key = f"{settings.manifest_path.resolve()}|{settings.store_key}|{settings.collection}"
    with _write_locks_guard:
        lock = _write_locks.setdefault(key, threading.Lock())
    with lock:
        yield


def supported_extensions() -> list[str]:
    """File extensions Nook can read (".md", ".pdf", ...), for upload filters."""
    from ingest.loaders import LOADERS

    return sorted(LOADERS)


def available_backends() -> list[str]:
    """Names of the registered LLM backends."""
    from rag.llms import known_backends

    return known_backends()


def available_models(settings: Settings, models_dirs: Sequence[Path] = ()) -> list[Any]:
    """Local models for the model picker (see rag.discovery.discover): bundled GGUF, `data_dir/models`, Ollama tags."""
    from rag.discovery import OLLAMA_DEFAULT_URL, discover

    folders = [settings.data_dir / "models", *models_dirs]
    ollama_url = settings.llm_base_url if settings.llm_backend == "ollama" and settings.llm_base_url else None
    return discover(folders, ollama_url=ollama_url or OLLAMA_DEFAULT_URL, n_ctx=settings.n_ctx)


def collection_model(settings: Settings) -> str | None:
    """The embedding model the configured collection was built with, if it exists (no model is loaded)."""
    from rag.store import index_model

    return index_model(settings)


def build_embedder(settings: Settings) -> Any:
    """The configured embedding model, loaded on first use; one can be shared by services that use the same model."""
    from rag.embeddings import LazyEmbedder

    return LazyEmbedder(
        settings.embedding_model, batch_size=settings.embedding_batch_size, precision=settings.embedding_precision
    )


def safe_upload_name(name: str, allowed_extensions: Sequence[str] | None = None) -> str:
    """The name an uploaded file is saved under: no folders, no hidden or reserved names, a readable type.

    Path components are stripped ("../../etc/x.md" becomes "x.md"), characters no file system likes become "_".
    Raises NookError with the reason when nothing usable is left or the type is not one Nook reads.
    """
    base = unicodedata.normalize("NFC", name).replace("\\", "/").split("/")[-1].strip()
    base = _UNSAFE_NAME_CHARS.sub("_", base).lstrip(". ")
    if not base or base in {".", ".."}:
        raise NookError(f"cannot save an upload named {name!r}: give the file a name")
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem:
        raise NookError(f"cannot save {name!r}: the file has no extension, so Nook cannot tell how to read it")
    allowed = [e.lower() for e in (allowed_extensions or supported_extensions())]
    if "." + ext.lower() not in allowed:
        raise NookError(f"cannot read {name!r}: .{ext} files are not supported (use {', '.join(allowed)})")
    while len(base.encode("utf-8")) > _MAX_NAME_BYTES:
        stem = stem[:-1]
        base = f"{stem}.{ext}"
    return base


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
                    # The smaller of the configured window and the one the backend really has.
                    n_ctx=min(s.n_ctx, self.llm_info.n_ctx or s.n_ctx),
                    max_tokens=s.max_tokens,
                    params=params,
                    cache=_open_answer_cache(s.data_dir / "answers.sqlite3") if s.answer_cache else None,
                )
            return self._chain

    # ------------------------------------------------------------------ operations

    def search(self, question: str, k: int | None = None, filters: SearchFilters | None = None) -> SearchResult:
        """The chunks that best match the question."""
        with store_failures(self.settings):
            return self.searcher.search(question, k=k, filters=filters)

    def ask(self, question: str, history: Sequence[tuple[str, str]] = (), filters: SearchFilters | None = None) -> Any:
        """An AnswerStream: iterate it for the streamed answer, then read `.result` for the sources."""
        if not question.strip():
            raise NookError("the question is empty")
        def start() -> Any:
            # An empty index is reported before the model is loaded: that takes seconds, the check does not.
            with store_failures(self.settings):
                self.searcher.check_index()
            return self.chain.ask(question, history, filters)

        return _Serialized(start, self._generate_lock)

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

    def evaluate(
        self,
        set_path: Path,
        k: int | None = None,
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> Any:
        """Score retrieval on a question set (see rag.evaluate) and keep the report as the last one.

        A BEIR set is indexed first into an index of its own under `data_dir/eval` (synced: a second run reuses it);
        answer pairs are scored against the configured collection. on_progress gets (stage, done, total), the stage
        being "index" (files) or "questions".
        """
        from rag.evaluate import Evaluator, beir_settings, load_eval_set, save_report, write_beir_documents

        eval_set = load_eval_set(Path(set_path))
        k = k or self.settings.retrieval_k
        if eval_set.kind == "beir":
            from ingest.pipeline import IngestPipeline

            settings = beir_settings(self.settings, eval_set)
            names = write_beir_documents(eval_set, settings.data_dir / "documents")
            index_progress = (lambda done, total, _chunks: on_progress("index", done, total)) if on_progress else None
            report = IngestPipeline(settings, self.embedder).sync(
                [settings.data_dir / "documents"], on_progress=index_progress
            )
            if report.failures:
                path, reason = report.failures[0]
                raise NookError(f"cannot index the BEIR corpus: {path}: {reason}")
            searcher = Searcher(settings, self.embedder)
            evaluator = Evaluator(searcher, k, doc_id=lambda source: names.get(Path(source).name, source))
        else:
            settings = self.settings
            evaluator = Evaluator(self.searcher, k)
        question_progress = (lambda done, total: on_progress("questions", done, total)) if on_progress else None
        result = evaluator.run(eval_set, settings, on_progress=question_progress)
        result.collection = settings.collection if eval_set.kind == "pairs" else f"{eval_set.path.name} (BEIR corpus)"
        save_report(self.settings, result)
        return result

    def last_eval_report(self) -> Any:
        """The report of the last evaluation in this data dir, or None."""
        from rag.evaluate import load_last_report

        return load_last_report(self.settings)

    def stats(self) -> IndexStats:
        """Documents, chunks, failures and the time of the last sync."""
        from ingest.manifest import Manifest
        from rag.store import open_collection

        collection = open_collection(
            self.searcher.client,
            self.settings.collection,
            self.embedder.name,
            self.embedder.dim,
            create=False,
            settings=self.settings,
        )
        with (
            store_failures(self.settings),
            Manifest(self.settings.manifest_path, self.settings.store_key, self.settings.collection) as manifest,
        ):
            files = manifest.files()
            return IndexStats(
                collection=self.settings.collection,
                documents=len(files),
                chunks=collection.count() if collection is not None else 0,
                failed=len(manifest.failures()),
                last_sync=manifest.last_sync(),
                embedding_model=self.embedder.name,
            )

    # ------------------------------------------------------------------ documents and collections (for the UI)

    @property
    def uploads_dir(self) -> Path:
        """Where uploaded files are kept: `data_dir/uploads`."""
        return self.settings.data_dir / UPLOADS_FOLDER

    def documents(self) -> list[DocumentInfo]:
        """Every file the collection holds, sorted by path."""
        from ingest.manifest import Manifest

        with Manifest(self.settings.manifest_path, self.settings.store_key, self.settings.collection) as manifest:
            files = manifest.files()
        return [
            DocumentInfo(
                path=record.path,
                file_name=Path(record.path).name,
                folder=str(Path(record.path).parent),
                chunks=len(record.chunk_ids),
                size=record.size,
                ingested_at=record.ingested_at,
            )
            for record in sorted(files.values(), key=lambda r: r.path)
        ]

    def failures(self) -> dict[str, str]:
        """Files whose last ingest failed, with the reason."""
        from ingest.manifest import Manifest

        with Manifest(self.settings.manifest_path, self.settings.store_key, self.settings.collection) as manifest:
            return manifest.failures()

    def list_collections(self) -> list[str]:
        """Names of the collections in the store (the configured one included, even before its first sync)."""
        try:
            names = {c if isinstance(c, str) else c.name for c in self.searcher.client.list_collections()}
        except Exception as exc:  # noqa: BLE001 - chromadb raises its own and OS errors alike
            raise NookError(f"cannot list the collections: {type(exc).__name__}: {exc}") from None
        return sorted(names | {self.settings.collection})

    def sync(self, paths: Sequence[Path], on_progress: Callable[[int, int, int], None] | None = None) -> Any:
        """`ingest`, holding the index write lock so that it never interleaves with a removal or another sync."""
        missing = [str(p) for p in paths if not Path(p).exists()]
        if missing:
            raise NookError(f"not found: {', '.join(missing)}: check the path (it is read on this machine)")
        with _index_write_lock(self.settings):
            return self.ingest(paths, on_progress=on_progress)

    def save_upload(self, name: str, data: bytes, max_mb: float | None = None) -> Path:
        """Save an uploaded file into `data_dir/uploads` under a safe name; the caller then syncs the returned path.

        A file of the same name is replaced (the next sync sees it as changed). Raises NookError when the name,
        the type or the size is not acceptable.
        """
        filename = safe_upload_name(name)
        limit_mb = min(max_mb, self.settings.max_file_mb) if max_mb else self.settings.max_file_mb
        if len(data) > limit_mb * 1024 * 1024:
            raise NookError(f"{filename} is too large ({len(data) / 1e6:.1f} MB > {limit_mb:g} MB limit)")
        if not data:
            raise NookError(f"{filename} is empty")
        folder = self.uploads_dir.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        target = (folder / filename).resolve()
        if target.parent != folder:  # a symlink or a name that still escapes: refuse, never write outside
            raise NookError(f"cannot save an upload named {name!r} outside {folder}")
        partial = folder / f".{filename}.partial"
        partial.write_bytes(data)
        os.replace(partial, target)
        return target

    def remove_document(self, path: str) -> int:
        """Take one file out of the index and return how many chunks went with it.

        Chunks leave Chroma first, then the manifest row (a row is the promise that Chroma holds its ids); the run is
        marked dirty meanwhile, so an interruption is reconciled by the next sync. A copy in the uploads folder is
        deleted too; any other file stays on disk (syncing its folder again adds it back).
        """
        from ingest.manifest import Manifest
        from rag.store import batched, open_collection

        s = self.settings
        with _index_write_lock(s), store_failures(s), Manifest(s.manifest_path, s.store_key, s.collection) as manifest:
            record = manifest.files().get(path)
            if record is None:
                raise NookError(f"{path} is not in collection '{s.collection}': it may have been removed already")
            collection = open_collection(
                self.searcher.client, s.collection, self.embedder.name, self.embedder.dim, create=False, settings=s
            )
            manifest.set_dirty(True)
            if collection is not None:
                for part in batched(list(record.chunk_ids), 5000):
                    collection.delete(ids=part)
            manifest.remove(path)
            manifest.set_dirty(False)
        copy = Path(path)
        if copy.parent.resolve() == self.uploads_dir.resolve():
            copy.unlink(missing_ok=True)
        return len(record.chunk_ids)


def _open_answer_cache(path: Path) -> Any:
    """The answer cache, or None when it cannot be opened: a full or read-only data dir costs the cache, not answers."""
    import sqlite3

    from rag.answer_cache import AnswerCache

    try:
        return AnswerCache(path)
    except (sqlite3.Error, OSError):
        return None


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
