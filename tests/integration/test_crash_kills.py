"""kill -9 a real `python -m ingest` at seeded moments of its writes, in chains on one data dir: the index converges.

The test watches the data dir from outside, without locking anything: a change of the manifest's SQLite files or of
Chroma's `chroma.sqlite3` is a commit, and the manifest says how many files the job has done (rows written since it
began, rows of deleted or replaced files gone). A moment is a place in the commits of a clean run of the same job,
kept as "once N files are done, at the first commit of the k-th group of commits after that", so a re-run, which
skips what the killed runs committed and first reconciles, is killed at the same place of the job. The moments of a
chain grow, so the chain walks once through the whole job, from before its first write to its last batch. Each run
starts on the data dir the previous kill left; a last one runs to the end, and the index must then equal a clean one.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.manifest import Manifest
from rag.config import Settings
from rag.store import open_client
from tests.conftest import ROOT
from tests.integration.helpers import make_corpus, nook_env, run_ingest

pytestmark = pytest.mark.slow

# The multilingual USE model loads in about 1 s, all-MiniLM-L6-v2 in 5-10 s, and these tests start about 35
# processes; which model embeds does not change what is written when. Chunks of 48 tokens make about 830 chunks of
# the 30-file corpus: 7 batches of 128 (the pipeline's flush size), so the writes spread over the run.
# (NOOK_EMBEDDING_BATCH_SIZE would not: it splits a batch's embedding, not its writes.)
INGEST_ENV = {"NOOK_EMBEDDING_MODEL": "multilingual-use-v3", "NOOK_CHUNK_SIZE": "48", "NOOK_CHUNK_OVERLAP": "8"}
POLL_SECONDS = 0.001


# ---------------------------------------------------------------------------------------------------- watching


@dataclass(frozen=True)
class Write:
    """One commit seen from outside."""

    kind: str  # "chroma" or "manifest"
    done: int  # files the job has done after this commit (see read_progress)
    dirty: bool  # a run is marked as under way in the manifest, after this commit
    at: float  # seconds since the process started


@dataclass(frozen=True)
class Moment:
    """Where to kill a run; one of three kinds.

    - "start": before its first commit;
    - "setup": right after its `commits`-th commit, or once it has marked itself under way if that comes sooner
      (before the mark a fresh run creates the index and the manifest);
    - "job": once `done` files are done and the run is marked as under way (its dirty mark; a re-run of an
      interrupted job finds the mark there at its start), right after the first commit of the `groups`-th group of
      commits that follows the later of the two (0: at once). A group is a stretch of commits to one store: a
      batch's chunks going into Chroma, its rows going into the manifest, a re-run's reconciliation, the two halves
      of a deleted file. Rows are committed a few per millisecond, too fast to tell apart from outside; groups are
      not.

    A moment a run has reached before its first commit (a re-run that is already there) is `delay` seconds into its
    start-up, or its first commit if that comes sooner.
    """

    kind: str
    done: int = 0
    commits: int = 0
    groups: int = 0
    delay: float = 0.0


@dataclass(frozen=True)
class Kill:
    """What a kill left behind."""

    moment: Moment
    done: int
    dirty: bool


@dataclass(frozen=True)
class Job:
    """What the runs of a chain do to its data dir: begun at `since` (time.time()) with `rows_before` manifest rows."""

    since: float
    rows_before: int = 0


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def read_progress(data: Path, job: Job) -> tuple[int, bool] | None:
    """(files the job has done, whether a run is marked as under way), read-only; None while unreadable.

    A file is done when its row was written since the job began (new or replaced) or when a row from before is gone
    (deleted or replaced): a replaced file counts twice, which keeps the count growing as the job goes on.
    """
    path = data / "manifest.sqlite3"
    if not path.exists():
        return 0, False
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            new, old = 0, 0
            if "files" in tables:
                query = "SELECT SUM(ingested_at >= ?), SUM(ingested_at < ?) FROM files"
                new, old = (n or 0 for n in db.execute(query, (job.since, job.since)).fetchone())
            dirty = db.execute("SELECT MAX(dirty) FROM runs").fetchone()[0] if "runs" in tables else 0
    except sqlite3.Error:  # the file is being created
        return None
    return new + job.rows_before - old, bool(dirty)


class CommitWatch:
    """Sees the commits made to a data dir by polling the inode, size and mtime of its SQLite files: no locks taken."""

    def __init__(self, data: Path, job: Job) -> None:
        manifest = data / "manifest.sqlite3"
        self.paths = {
            "chroma": (data / "chroma" / "chroma.sqlite3",),
            "manifest": (manifest, manifest.with_name("manifest.sqlite3-wal")),
        }
        self.data = data
        self.job = job
        self.done, self.dirty = read_progress(data, job) or (0, False)  # first: reading may create the -wal file
        self.last = self._signatures()
        self.writes: list[Write] = []
        self.through_manifest = 0  # commits made up to the last manifest commit seen
        self.settling = 0  # polls left to read the manifest again: a change of its files can show before the commit

    def _signatures(self) -> dict[str, tuple[Any, ...]]:
        return {kind: tuple(_stat(p) for p in paths) for kind, paths in self.paths.items()}

    def poll(self, at: float) -> None:
        """Record the commits made since the last poll (Chroma first: the pipeline writes it before the manifest)."""
        now = self._signatures()
        changed = [kind for kind in ("chroma", "manifest") if now[kind] != self.last[kind]]
        self.last = now
        for kind in changed:
            self.writes.append(Write(kind, self.done, self.dirty, at))
        if "manifest" in changed:
            self.through_manifest = len(self.writes)
            self.settling = 30
        if self.settling:
            self.settling -= 1
            progress = read_progress(self.data, self.job)
            if progress is not None and progress != (self.done, self.dirty):
                # What the manifest says now is what its last commit did, even when read a few polls later.
                self.done, self.dirty = progress
                start = max(self.through_manifest - 1, 0)
                self.writes[start:] = [Write(w.kind, *progress, w.at) for w in self.writes[start:]]


def manifest_rows(data: Path) -> int:
    """Rows in the manifest of a data dir no run is using (0 when there is none)."""
    if not (data / "manifest.sqlite3").exists():
        return 0
    with Manifest(data / "manifest.sqlite3", "embedded", "nook") as manifest:
        return len(manifest.files())


def group_starts(writes: list[Write], begin: int, end: int) -> int:
    """How many of writes[begin:end] begin a group: differ in kind from the commit before."""
    return sum(1 for i in range(begin, end) if i == 0 or writes[i].kind != writes[i - 1].kind)


def start_ingest(corpus: Path, data: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", str(corpus)],
        cwd=ROOT,
        env=nook_env(data, **INGEST_ENV),
        stdout=subprocess.PIPE,  # a few lines: the pipes cannot fill up
        stderr=subprocess.PIPE,
        text=True,
    )


def watched_run(corpus: Path, data: Path, job: Job, moment: Moment | None = None) -> tuple[bool, list[Write]]:
    """Run the ingest and record its commits; with a moment, os.kill(pid, SIGKILL) it there. (killed, commits)."""
    watch = CommitWatch(data, job)
    process = start_ingest(corpus, data)
    started = time.monotonic()
    # Commits made when this run had marked itself under way. A re-run of an interrupted job finds the mark there
    # (and setting it again changes nothing in the file), so it counts from its start, reconciliation included.
    marked: int | None = 0 if watch.dirty else None
    reached = 0 if moment is not None and watch.done >= moment.done else None  # commits made when `done` was reached
    while process.poll() is None:
        watch.poll(time.monotonic() - started)
        writes = watch.writes
        if marked is None and watch.dirty and watch.through_manifest:
            marked = watch.through_manifest
        if moment is not None:
            if reached is None and watch.done >= moment.done:
                reached = watch.through_manifest
            if moment.kind == "start":
                due = True
            elif moment.kind == "setup":
                due = len(writes) >= moment.commits or marked is not None
            elif marked is not None and reached is not None:
                due = group_starts(writes, max(marked, reached), len(writes)) >= moment.groups
            else:
                due = False
            if due and (writes or time.monotonic() - started >= moment.delay):
                os.kill(process.pid, signal.SIGKILL)
                break
        time.sleep(POLL_SECONDS)
    out, err = process.communicate()
    killed = process.returncode == -signal.SIGKILL
    assert killed or process.returncode == 0, f"ingest failed ({process.returncode}): {out}\n{err}"
    return killed, watch.writes


def dirty_mark(clean: list[Write]) -> int:
    """How many commits the clean run had made once it was seen marked as under way."""
    return next(i for i, w in enumerate(clean, start=1) if w.dirty)


def last_batch(clean: list[Write]) -> int:
    """How many commits a clean ingest made before its last batch: before its last group of Chroma commits (in a
    sync, each replaced file's stale chunks are deleted right before its row, so there it is only the last file)."""
    return max(i for i, w in enumerate(clean) if w.kind == "chroma" and (i == 0 or clean[i - 1].kind != "chroma"))


def spread_moments(clean: list[Write], count: int, rng: random.Random, in_last_batch: bool) -> list[Moment]:
    """`count` seeded moments of the clean run's commits, growing.

    The first before its first commit; then one in each of the equal stretches its commits fall into, up to its last
    batch when `in_last_batch` (and the last at the first row of that batch: all its chunks in Chroma, its rows
    going in), else up to its last two commits.
    """
    marked = dirty_mark(clean)
    end = last_batch(clean) if in_last_batch else len(clean) - 1
    assert 0 < marked < end, clean
    middle = count - 1 - in_last_batch

    def delay() -> float:
        return rng.uniform(0.2, 1.0) * clean[0].at

    moments = [Moment("start", delay=delay())]
    for stretch in range(middle):
        low = 1 + (end - 1) * stretch // middle
        place = rng.randint(low, max(low, (end - 1) * (stretch + 1) // middle))
        if place < marked:
            moments.append(Moment("setup", commits=place, delay=delay()))
            continue
        done = clean[place - 1].done
        first = next(i for i, w in enumerate(clean, start=1) if w.done >= done) if done else 0
        groups = group_starts(clean, max(marked, first), place)
        moments.append(Moment("job", done=done, groups=groups, delay=delay()))
    if in_last_batch:
        moments.append(Moment("job", done=clean[end - 1].done, groups=2, delay=delay()))
    return moments


def kill_chains(
    corpus: Path, workdir: Path, moments: list[Moment], prepare: Callable[[Path], None]
) -> tuple[list[Path], list[Kill]]:
    """Kill one run at each moment, in order, each run starting on the data dir the previous kill left.

    A run that ends before its moment finishes its chain (the next moment starts a new one on a fresh data dir made
    by `prepare`), so every moment gets its kill. Returns the chains' data dirs and what each kill left.
    """
    chains: list[Path] = []
    kills: list[Kill] = []
    queue = list(moments)
    while queue:
        data = workdir / f"chain-{len(chains)}"
        prepare(data)
        chains.append(data)
        job = Job(time.time(), rows_before=manifest_rows(data))
        for run in itertools.count():
            killed, _ = watched_run(corpus, data, job, queue[0])
            if not killed:  # this run went to the end: the chain is done, the moment goes to the next one
                assert run, f"a run on a fresh data dir ended before {queue[0]}"
                break
            done, dirty = read_progress(data, job) or (-1, True)
            kills.append(Kill(queue.pop(0), done, dirty))
            if not queue:
                break
    return chains, kills


# ---------------------------------------------------------------------------------------------------- comparing


@dataclass
class IndexState:
    """Everything a data dir holds for the collection."""

    ids: list[str]  # as Chroma lists them, duplicates kept
    documents: dict[str, str]
    metadatas: dict[str, Any]
    embeddings: dict[str, np.ndarray]
    rows: dict[str, tuple[str, tuple[str, ...]]]  # manifest: path -> (sha256, chunk ids)
    dirty: bool
    failures: dict[str, str]
    searchable: list[str]  # sampled ids whose own vector finds a chunk with their text first


def read_index(data: Path) -> IndexState:
    settings = Settings(data_dir=data)
    collection = open_client(settings).get_collection(settings.collection)
    got = collection.get(include=["documents", "metadatas", "embeddings"])
    with Manifest(settings.manifest_path, settings.store_key, settings.collection) as manifest:
        rows = {path: (r.sha256, r.chunk_ids) for path, r in manifest.files().items()}
        dirty, failures = manifest.is_dirty(), manifest.failures()
    documents = dict(zip(got["ids"], got["documents"], strict=True))
    embeddings = {i: np.asarray(e, dtype=np.float32) for i, e in zip(got["ids"], got["embeddings"], strict=True)}
    searchable = []
    for cid in random.Random(3).sample(sorted(documents), k=min(12, len(documents))):
        hit = collection.query(query_embeddings=[embeddings[cid].tolist()], n_results=1, include=["documents"])
        if hit["documents"][0] and hit["documents"][0][0] == documents[cid]:
            searchable.append(cid)
    return IndexState(
        ids=sorted(got["ids"]),
        documents=documents,
        metadatas=dict(zip(got["ids"], got["metadatas"], strict=True)),
        embeddings=embeddings,
        rows=rows,
        dirty=dirty,
        failures=failures,
        searchable=sorted(searchable),
    )


def assert_consistent(state: IndexState) -> None:
    """No duplicates, no orphans: Chroma holds exactly the union of the manifest rows' chunk ids."""
    claimed = [cid for _, ids in state.rows.values() for cid in ids]
    assert len(state.ids) == len(set(state.ids)), "duplicate ids in Chroma"
    assert len(claimed) == len(set(claimed)), "a chunk id claimed twice in the manifest"
    assert set(state.ids) - set(claimed) == set(), "chunks in Chroma that no manifest row claims"
    assert set(claimed) - set(state.ids) == set(), "manifest rows whose chunks are missing from Chroma"
    assert not state.dirty and not state.failures
    assert len(state.searchable) == min(12, len(state.ids)), "a chunk is not found by its own vector"


# A sync keeps the chunks of an edited file that did not change, and only touches the manifest row of a file whose
# mtime changed but not its content: those chunks keep the mtime and hash of the file as it was (a clean ingest has the
# new ones), with or without a crash.
FILE_VERSION_KEYS = ("mtime", "file_sha256", "date")


def assert_same_index(got: IndexState, clean: IndexState, label: str, ignore: tuple[str, ...] = ()) -> None:
    assert_consistent(got)
    assert got.ids == clean.ids, f"{label}: chunk ids differ from a clean ingest"
    assert got.rows == clean.rows, f"{label}: manifest rows differ from a clean ingest"
    assert got.documents == clean.documents, f"{label}: texts differ"

    def comparable(metadatas: dict[str, Any]) -> dict[str, Any]:
        return {i: {k: v for k, v in m.items() if k not in ignore} for i, m in metadatas.items()}

    assert comparable(got.metadatas) == comparable(clean.metadatas), f"{label}: metadata differs"
    worst = max(float(np.abs(got.embeddings[i] - clean.embeddings[i]).max()) for i in clean.ids)
    assert worst < 1e-3, f"{label}: a vector differs from a clean ingest by {worst}"


def finish(corpus: Path, data: Path) -> None:
    result = run_ingest(corpus, data_dir=data, **INGEST_ENV)
    assert result.returncode == 0, result.stdout + result.stderr


def assert_nothing_left_to_do(corpus: Path, data: Path) -> None:
    again = run_ingest(corpus, "--json", data_dir=data, **INGEST_ENV)
    assert again.returncode == 0, again.stderr
    for key in ('"new": 0', '"changed": 0', '"deleted": 0', '"chunks_added": 0', '"recovered": false'):
        assert key in again.stdout, again.stdout


# ---------------------------------------------------------------------------------------------------- tests


def test_twenty_kills_in_a_chain_during_an_ingest_leave_the_index_a_clean_ingest_makes(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", files=30)
    clean_dir = tmp_path / "clean"
    _, timeline = watched_run(corpus, clean_dir, Job(time.time()))
    clean = read_index(clean_dir)
    assert_consistent(clean)
    files = len(clean.rows)
    assert files == 31 and len(clean.ids) > 600
    assert sum(1 for w in timeline if w.kind == "chroma") > 12, "too few commits seen to spread the kills"

    moments = spread_moments(timeline, 20, random.Random(20261122), in_last_batch=True)
    chains, kills = kill_chains(corpus, tmp_path, moments, prepare=lambda data: None)
    assert len(kills) == 20
    assert kills[0].done == 0 and not kills[0].dirty, "the first kill should land before the first write"
    assert any(k.dirty and 0 < k.done < files for k in kills), f"no kill landed between committed files: {kills}"
    assert sum(k.dirty for k in kills) >= 10, kills
    before_last_batch = timeline[last_batch(timeline) - 1].done
    assert kills[-1].done >= before_last_batch, f"the last kill came before the last batch: {kills}"

    for number, data in enumerate(chains):
        finish(corpus, data)
        if number == len(chains) - 1:
            assert_nothing_left_to_do(corpus, data)
        assert_same_index(read_index(data), clean, f"chain {number} of {len(chains)}")


def change_corpus(corpus: Path, rng: random.Random, extra: Path) -> None:
    """Rewrite 8 notes, append to 3 (most of their chunks stay), touch 1, delete 4, add 3."""
    notes = rng.sample(sorted(corpus.glob("note-*.md")), 16)
    for path in notes[:8]:
        path.write_text(path.read_text(encoding="utf-8")[::-1][:3000] + "\n\nrewritten\n", encoding="utf-8")
    for path in notes[8:11]:
        with path.open("a", encoding="utf-8") as handle:
            handle.write("\nA paragraph added after the last one, about the spare key under the blue flowerpot.\n")
    info = notes[11].stat()
    os.utime(notes[11], ns=(info.st_atime_ns, info.st_mtime_ns + 5_000_000_000))
    for path in notes[12:]:
        path.unlink()
    make_corpus(extra, files=3, seed=99)
    for path in extra.glob("note-*.md"):
        shutil.move(str(path), corpus / f"extra-{path.name}")


def test_eight_kills_in_a_chain_during_a_sync_that_replaces_and_deletes_files_leave_a_clean_index(
    tmp_path: Path,
) -> None:
    corpus = make_corpus(tmp_path / "corpus", files=30)
    before = tmp_path / "before"
    watched_run(corpus, before, Job(time.time()))
    change_corpus(corpus, random.Random(11), tmp_path / "extra")

    # The clean sync, on a copy of the index, gives the commits to spread the kills over; a fresh ingest of the
    # changed corpus is what every index must end up equal to.
    synced = tmp_path / "synced"
    shutil.copytree(before, synced)
    _, timeline = watched_run(corpus, synced, Job(time.time(), rows_before=manifest_rows(synced)))
    assert sum(1 for w in timeline if w.kind == "chroma") > 10, "too few commits seen to spread the kills"
    reference = tmp_path / "reference"
    watched_run(corpus, reference, Job(time.time()))
    clean = read_index(reference)
    assert len(clean.rows) == 31 - 4 + 3
    assert_same_index(read_index(synced), clean, "clean sync", ignore=FILE_VERSION_KEYS)

    moments = spread_moments(timeline, 8, random.Random(5), in_last_batch=False)
    chains, kills = kill_chains(corpus, tmp_path, moments, prepare=lambda data: shutil.copytree(before, data))
    assert len(kills) == 8
    assert not kills[0].dirty, "the first kill should land before the first write"
    assert sum(k.dirty for k in kills) >= 4, kills

    for number, data in enumerate(chains):
        finish(corpus, data)
        if number == len(chains) - 1:
            assert_nothing_left_to_do(corpus, data)
        assert_same_index(read_index(data), clean, f"chain {number} of {len(chains)}", ignore=FILE_VERSION_KEYS)
