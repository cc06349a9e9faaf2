"""Sync folders into the index: scan -> compare with the manifest -> load -> split -> embed -> upsert/delete.

Write order, so that a kill -9 at any moment converges on the next run:
  1. mark the run dirty in the manifest;
  2. for a changed or new file: upsert its new chunks into Chroma, delete its stale chunks, then commit
     its manifest row (the row is the proof that Chroma holds exactly those ids);
  3. for a deleted file: delete its chunks, then its row;
  4. mark the run clean.
A run that finds the previous one dirty first reconciles: ids in Chroma that no row claims are deleted,
rows whose ids are missing from Chroma are dropped (their files are ingested again as new).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ingest.loaders import HEADING_FORMATS, NotSupported, load_file
from ingest.manifest import FileRecord, Manifest
from ingest.splitter import ChunkSplitter
from rag.config import Settings
from rag.embeddings import chunking_for
from rag.errors import DocumentError
from rag.language import text_language
from rag.store import batched, drop_collection, iter_ids, open_client, open_collection, store_failures

SPLITTER_VERSION = "1"
_DATE_IN_NAME = re.compile(r"(?<!\d)(20\d{2}|19\d{2})[-_.]?(0[1-9]|1[0-2])[-_.]?(0[1-9]|[12]\d|3[01])(?!\d)")
_FRONT_MATTER_DATE = re.compile(r"\A---\s*\n(?:.*\n)*?date:\s*[\"']?(\d{4})-(\d{2})-(\d{2})", re.MULTILINE)


class Embedder(Protocol):
    """What the pipeline needs of an embedding model."""

    name: str
    dim: int

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees."""

    def encode(self, texts: Sequence[str]) -> Any:
        """Unit-length vectors, one row per text."""


@dataclass
class ChunkRecord:
    """One chunk as stored in Chroma."""

    id: str
    text: str
    metadata: dict[str, str | int | float]


@dataclass
class FileState:
    """A file found on disk."""

    path: str
    size: int
    mtime_ns: int
    sha256: str = ""


@dataclass
class SyncReport:
    """What a sync did; printed as the summary and returned to the UI."""

    seen: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    skipped: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    planned: dict[str, list[str]] = field(default_factory=dict)
    recovered: bool = False

    def summary(self) -> str:
        """The one-line summary."""
        verb = "would change" if self.dry_run else "synced"
        return (
            f"{verb}: {self.seen} files seen, {self.new} new, {self.changed} changed, {self.unchanged} unchanged, "
            f"{self.deleted} deleted, {self.failed} failed, {self.skipped} skipped; chunks "
            f"+{self.chunks_added} -{self.chunks_removed}; {self.seconds:.1f} s"
        )


ProgressCallback = Callable[[int, int, int], None]  # files done, files total, chunks embedded


def file_sha256(data: bytes) -> str:
    """Content hash of a file."""
    return hashlib.sha256(data).hexdigest()


def chunk_id(source: str, page: int | None, start: int, text: str) -> str:
    """Stable id of a chunk from its source, page, position and content."""
    where = hashlib.sha1(source.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    what = hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"{where}-{page or 0}-{start}-{what}"


def document_date(path: Path, first_text: str, mtime_ns: int) -> tuple[int, str]:
    """The date a document is about, as YYYYMMDD, and where it came from (name, front matter or mtime)."""
    match = _DATE_IN_NAME.search(path.name)
    if match:
        try:
            day = dt.date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
            return int(day.strftime("%Y%m%d")), "name"
        except ValueError:
            pass
    match = _FRONT_MATTER_DATE.search(first_text[:2000])
    if match:
        try:
            day = dt.date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
            return int(day.strftime("%Y%m%d")), "front matter"
        except ValueError:
            pass
    day = dt.datetime.fromtimestamp(mtime_ns / 1e9).date()
    return int(day.strftime("%Y%m%d")), "mtime"


def pipeline_config(model: str, chunk_size: int, chunk_overlap: int, revision: int = 0) -> str:
    """Everything that changes the chunks of a file or their vectors: a changed value re-ingests every file."""
    config = f"{model}|{chunk_size}|{chunk_overlap}|split{SPLITTER_VERSION}"
    return f"{config}|rev{revision}" if revision else config  # revision 0: the configs indexes were built with


def _printable(path: str) -> str:
    """A path whose bytes are not all UTF-8 (kept as surrogates), those bytes spelt as backslash escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def scan(roots: Iterable[Path], skip: Iterable[Path] = ()) -> tuple[list[FileState], list[tuple[str, str]]]:
    """Files under the roots (hidden ones and skipped folders excluded), and paths that could not be read."""
    skip_real = {os.path.realpath(p) for p in skip}
    found: dict[str, FileState] = {}
    problems: list[tuple[str, str]] = []

    def valid_name(path: str) -> bool:
        # Chroma and SQLite store UTF-8 only: such a path would crash the whole run at the first write.
        if _printable(path) == path:
            return True
        problems.append((_printable(path), "name is not valid UTF-8 (rename it to index it)"))
        return False

    def visit(path: str) -> None:
        if not valid_name(path):
            return
        try:
            info = os.stat(path)
        except FileNotFoundError:
            problems.append((path, "broken link or vanished file"))
            return
        except OSError as exc:
            problems.append((path, f"cannot stat ({exc.strerror or exc})"))
            return
        if stat.S_ISREG(info.st_mode):
            found[path] = FileState(path=path, size=info.st_size, mtime_ns=info.st_mtime_ns)

    for root in roots:
        root_abs = os.path.abspath(root)
        if os.path.isfile(root_abs):
            visit(root_abs)
            continue

        def on_error(exc: OSError) -> None:
            problems.append((exc.filename or root_abs, f"cannot read folder ({exc.strerror or exc})"))

        for folder, dirs, files in os.walk(root_abs, onerror=on_error, followlinks=False):
            dirs[:] = sorted(
                d
                for d in dirs
                if not d.startswith(".")
                and os.path.realpath(os.path.join(folder, d)) not in skip_real
                and valid_name(os.path.join(folder, d))
            )
            for name in sorted(files):
                if not name.startswith("."):
                    visit(os.path.join(folder, name))
    return sorted(found.values(), key=lambda f: f.path), problems


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


class IngestPipeline:
    """Keeps one collection in step with the files under some folders."""

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        client: Any | None = None,
        flush_chunks: int = 128,
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.client = client if client is not None else open_client(settings)
        self.flush_chunks = flush_chunks
        size, overlap = chunking_for(settings.chunk_size, settings.chunk_overlap, embedder)
        self.splitter = ChunkSplitter(size, overlap, embedder.count_tokens)
        revision = getattr(getattr(embedder, "spec", None), "revision", 0)
        self.config = pipeline_config(embedder.name, size, overlap, revision)

    # ------------------------------------------------------------------ public

    def sync(
        self,
        roots: Sequence[Path],
        dry_run: bool = False,
        rebuild: bool = False,
        on_progress: ProgressCallback | None = None,
        on_file_error: Callable[[str, str], None] | None = None,
    ) -> SyncReport:
        """Make the collection hold exactly the chunks of the readable files under roots.

        Raises:
            StoreError: the index cannot be written (disk full, Chroma server gone); the run is left marked dirty
                where it got that far, so the next run reconciles and finishes it.
        """
        with store_failures(self.settings):
            return self._sync(roots, dry_run, rebuild, on_progress, on_file_error)

    def _sync(
        self,
        roots: Sequence[Path],
        dry_run: bool,
        rebuild: bool,
        on_progress: ProgressCallback | None,
        on_file_error: Callable[[str, str], None] | None,
    ) -> SyncReport:
        started = time.perf_counter()
        report = SyncReport(dry_run=dry_run)
        root_paths = [os.path.abspath(r) for r in roots]
        with Manifest(self.settings.manifest_path, self.settings.store_key, self.settings.collection) as manifest:
            if rebuild and not dry_run:
                manifest.set_dirty(True)
                drop_collection(self.client, self.settings.collection)
                manifest.clear()
            collection = open_collection(
                self.client,
                self.settings.collection,
                self.embedder.name,
                self.embedder.dim,
                create=not dry_run,
                settings=self.settings,
            )
            if collection is not None and manifest.is_dirty() and not dry_run:
                self._reconcile(collection, manifest)
                report.recovered = True

            files, problems = scan(roots, skip=[self.settings.data_dir])
            for path, reason in problems:
                report.failures.append((path, reason))
                if on_file_error:
                    on_file_error(path, reason)
            known = manifest.files()
            on_disk = {f.path for f in files}
            # A folder that could not be read (unmounted disk, no permission) says nothing about its files:
            # they are kept, not deleted.
            unreadable = [path for path, reason in problems if reason.startswith("cannot read folder")]
            deleted = [p for p in known if _under(p, root_paths) and p not in on_disk and not _under(p, unreadable)]
            todo: list[FileState] = []
            for state in files:
                record = known.get(state.path)
                if (
                    record is not None
                    and record.config == self.config
                    and record.size == state.size
                    and record.mtime_ns == state.mtime_ns
                ):
                    report.unchanged += 1
                else:
                    todo.append(state)
            report.seen = len(files) + len(problems)

            if dry_run:
                return self._plan_only(report, todo, deleted, known, started)

            assert collection is not None
            manifest.set_dirty(True)
            for path in deleted:
                ids = list(known[path].chunk_ids)
                for part in batched(ids, 5000):
                    collection.delete(ids=part)
                manifest.remove(path)
                report.deleted += 1
                report.chunks_removed += len(ids)
            self._ingest(collection, manifest, todo, known, report, on_progress, on_file_error)
            for path, reason in report.failures:
                manifest.record_failure(path, reason)
            manifest.set_dirty(False)
        report.failed = len(report.failures)
        report.skipped = len(report.skipped_files)
        report.seconds = time.perf_counter() - started
        return report

    # ------------------------------------------------------------------ steps

    def _plan_only(
        self,
        report: SyncReport,
        todo: list[FileState],
        deleted: list[str],
        known: dict[str, FileRecord],
        started: float,
    ) -> SyncReport:
        plan: dict[str, list[str]] = {"new": [], "changed": [], "deleted": sorted(deleted)}
        for state in todo:
            record = known.get(state.path)
            if record is None:
                plan["new"].append(state.path)
                continue
            try:
                digest = file_sha256(Path(state.path).read_bytes())
            except OSError as exc:
                report.failures.append((state.path, f"cannot read ({exc.strerror or exc})"))
                continue
            if digest == record.sha256 and record.config == self.config:
                report.unchanged += 1
            else:
                plan["changed"].append(state.path)
        report.new, report.changed, report.deleted = len(plan["new"]), len(plan["changed"]), len(deleted)
        report.chunks_removed = sum(len(known[p].chunk_ids) for p in deleted)
        report.planned = plan
        report.failed = len(report.failures)
        report.seconds = time.perf_counter() - started
        return report

    def _reconcile(self, collection: Any, manifest: Manifest) -> None:
        """After an interrupted run: drop what no manifest row claims, forget rows whose chunks are gone."""
        records = manifest.files()
        claimed = {cid for record in records.values() for cid in record.chunk_ids}
        present = set(iter_ids(collection))
        orphans = list(present - claimed)
        for part in batched(orphans, 5000):
            collection.delete(ids=part)
        for record in records.values():
            if any(cid not in present for cid in record.chunk_ids):
                manifest.remove(record.path)
                for part in batched([c for c in record.chunk_ids if c in present], 5000):
                    collection.delete(ids=part)

    def _ingest(
        self,
        collection: Any,
        manifest: Manifest,
        todo: list[FileState],
        known: dict[str, FileRecord],
        report: SyncReport,
        on_progress: ProgressCallback | None,
        on_file_error: Callable[[str, str], None] | None,
    ) -> None:
        limit = int(self.settings.max_file_mb * 1024 * 1024)
        pending: list[tuple[FileState, list[ChunkRecord]]] = []  # files whose new chunks are not all stored yet
        buffer: list[ChunkRecord] = []
        embedded = 0
        # A batch is embedded in a worker thread while this one stores the batch before it and reads and splits
        # the next files (the encoders' numpy and torch work and SentencePiece release the GIL; Chroma's upsert
        # holds it, which is what still stalls the encoder). Chroma and the manifest are written from this thread
        # only, in file order.
        in_flight: _Batch | None = None

        def fail(path: str, reason: str) -> None:
            report.failures.append((path, reason))
            if on_file_error:
                on_file_error(path, reason)

        def store(batch: _Batch) -> None:
            nonlocal embedded
            vectors = batch.vectors.result() if batch.vectors is not None else None
            upsert_limit = max(1, min(5000, _max_batch(self.client)))
            for start in range(0, len(batch.chunks), upsert_limit):
                part = batch.chunks[start : start + upsert_limit]
                collection.upsert(
                    ids=[c.id for c in part],
                    documents=[c.text for c in part],
                    metadatas=[c.metadata for c in part],
                    embeddings=vectors[start : start + upsert_limit],
                )
            embedded += len(batch.chunks)
            for state, chunks in batch.files:
                self._finish_file(collection, manifest, state, chunks, known.get(state.path), report)

        def flush(encoder: ThreadPoolExecutor) -> None:
            nonlocal in_flight
            previous, in_flight = in_flight, None
            if buffer or pending:
                texts = [c.text for c in buffer]
                vectors = encoder.submit(self.embedder.encode, texts) if texts else None
                in_flight = _Batch(vectors, list(buffer), list(pending))
                buffer.clear()
                pending.clear()
            if previous is not None:
                store(previous)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nook-embed") as encoder:
            for done, state in enumerate(todo, start=1):
                record = known.get(state.path)
                try:
                    if state.size > limit:
                        raise DocumentError(
                            state.path,
                            f"too large ({state.size / 1e6:.0f} MB > {self.settings.max_file_mb:g} MB limit)",
                        )
                    data = _read(state.path)
                    state.sha256 = file_sha256(data)
                    if record is not None and record.sha256 == state.sha256 and record.config == self.config:
                        manifest.touch(state.path, state.size, state.mtime_ns)
                        report.unchanged += 1
                        continue
                    chunks = self.chunk_file(Path(state.path), data, state)
                except DocumentError as exc:
                    fail(state.path, exc.reason)
                    continue
                except NotSupported as exc:
                    report.skipped_files.append((state.path, str(exc)))
                    continue
                finally:
                    if on_progress:
                        on_progress(done, len(todo), embedded + len(buffer))
                # A changed file's unchanged chunks keep their vectors, unless the vectors themselves changed (a new
                # revision of the model: the config differs, the chunk ids do not).
                reuse = record is not None and record.config == self.config
                old = set(record.chunk_ids) if reuse else set()
                buffer.extend(c for c in chunks if c.id not in old)
                pending.append((state, chunks))
                if len(buffer) >= self.flush_chunks:
                    flush(encoder)
            flush(encoder)
            if in_flight is not None:
                store(in_flight)
        if on_progress:
            on_progress(len(todo), len(todo), embedded)

    def _finish_file(
        self,
        collection: Any,
        manifest: Manifest,
        state: FileState,
        chunks: list[ChunkRecord],
        record: FileRecord | None,
        report: SyncReport,
    ) -> None:
        new_ids = [c.id for c in chunks]
        old_ids = set(record.chunk_ids) if record is not None else set()
        stale = list(old_ids - set(new_ids))
        for part in batched(stale, 5000):
            collection.delete(ids=part)
        manifest.put(
            FileRecord(
                path=state.path,
                size=state.size,
                mtime_ns=state.mtime_ns,
                sha256=state.sha256,
                config=self.config,
                chunk_ids=tuple(new_ids),
                ingested_at=time.time(),
            )
        )
        if record is None:
            report.new += 1
        else:
            report.changed += 1
        report.chunks_added += sum(1 for cid in new_ids if cid not in old_ids)
        report.chunks_removed += len(stale)

    # ------------------------------------------------------------------ chunking

    def chunk_file(self, path: Path, data: bytes, state: FileState) -> list[ChunkRecord]:
        """Load and split one file into chunk records with their metadata."""
        pages = load_file(path, data)
        style = "markdown" if path.suffix.lower() in HEADING_FORMATS else "rst" if path.suffix.lower() == ".rst" else ""
        first_text = pages[0].text if pages else ""
        date, date_source = document_date(path, first_text, state.mtime_ns)
        records: list[ChunkRecord] = []
        for page in pages:
            for piece in self.splitter.split(page.text, style):
                meta: dict[str, str | int | float] = {
                    "source": state.path,
                    "file_name": path.name,
                    "folder": str(path.parent),
                    "start": piece.start,
                    "heading": piece.heading,
                    "mtime": state.mtime_ns / 1e9,
                    "date": date,
                    "date_source": date_source,
                    "file_sha256": state.sha256,
                    "lang": text_language(piece.text),
                }
                if page.page is not None:
                    meta["page"] = page.page
                records.append(ChunkRecord(chunk_id(state.path, page.page, piece.start, piece.text), piece.text, meta))
        return records


@dataclass
class _Batch:
    """Chunks being embedded, and the files that are complete once those chunks are stored."""

    vectors: Future | None  # None: no new chunk (the files' chunks were all stored already)
    chunks: list[ChunkRecord]
    files: list[tuple[FileState, list[ChunkRecord]]]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except PermissionError:
        raise DocumentError(path, "permission denied") from None
    except IsADirectoryError:
        raise DocumentError(path, "is a folder") from None
    except FileNotFoundError:
        raise DocumentError(path, "vanished while reading") from None
    except OSError as exc:
        raise DocumentError(path, f"cannot read ({exc.strerror or exc})") from None


def _max_batch(client: Any) -> int:
    try:
        return int(client.get_max_batch_size())
    except Exception:  # noqa: BLE001 - older clients and servers may not answer
        return 5000
