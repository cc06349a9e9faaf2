"""kill -9 at seeded random moments converges; the same pipeline works against a real `chroma run` server."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ingest.manifest import Manifest
from rag.config import Settings
from rag.store import open_client
from tests.conftest import ROOT
from tests.integration.helpers import free_port, make_corpus, nook_env, run_ingest

pytestmark = pytest.mark.slow


def index_snapshot(settings: Settings) -> tuple[list[str], list[str]]:
    """(sorted ids in Chroma, sorted ids the manifest claims)."""
    collection = open_client(settings).get_collection(settings.collection)
    with Manifest(settings.manifest_path, settings.store_key, settings.collection) as manifest:
        claimed = sorted(c for r in manifest.files().values() for c in r.chunk_ids)
    return sorted(collection.get(include=[])["ids"]), claimed


def start_ingest(corpus: Path, data: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", str(corpus)],
        cwd=ROOT,
        env=nook_env(data),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill_at(corpus: Path, data: Path, delay: float) -> bool:
    """Start an ingest and kill -9 it after delay seconds; True if it was still running."""
    process = start_ingest(corpus, data)
    try:
        process.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


def manifest_rows(data: Path) -> int:
    """Files the running ingest has committed so far (0 before the manifest exists)."""
    import sqlite3

    path = data / "manifest.sqlite3"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is being created
        return 0


def kill_after_rows(corpus: Path, data: Path, rows: int, timeout: float = 300) -> bool:
    """Start an ingest and kill -9 it once it has committed `rows` files; True if it was killed mid-run."""
    process = start_ingest(corpus, data)
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if manifest_rows(data) >= rows:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.01)
    process.kill()
    process.wait()
    return False


def timed_clean_run(corpus: Path, data: Path) -> float:
    started = time.monotonic()
    result = run_ingest(corpus, data_dir=data)
    assert result.returncode == 0, result.stderr
    return time.monotonic() - started


def test_kill_9_during_ingest_then_rerun_equals_a_clean_ingest(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", files=30)
    clean = tmp_path / "clean"
    duration = timed_clean_run(corpus, clean)
    expected, expected_manifest = index_snapshot(Settings(data_dir=clean))
    assert expected == expected_manifest and len(expected) > 100

    rng = random.Random(20261122)
    files = len(list(corpus.iterdir()))
    for attempt in range(3):
        crashed = tmp_path / f"crashed-{attempt}"
        # A seeded moment in the middle of writing: after some files were committed, before the last.
        assert kill_after_rows(corpus, crashed, rng.randint(1, files - 2)), "the ingest ended before the kill"
        with Manifest(crashed / "manifest.sqlite3", "embedded", "nook") as manifest:
            assert manifest.is_dirty()  # the kill landed between the run's first write and its end
        # A second kill at a random time, which may land in model loading, recovery or writing (or miss).
        kill_at(corpus, crashed, rng.uniform(0.1 * duration, 0.7 * duration))
        result = run_ingest(corpus, data_dir=crashed)
        assert result.returncode == 0, result.stderr
        assert index_snapshot(Settings(data_dir=crashed)) == (expected, expected), f"attempt {attempt}"
        # And the run after that has nothing left to do.
        again = run_ingest(corpus, "--json", data_dir=crashed)
        assert '"new": 0' in again.stdout and '"changed": 0' in again.stdout


def test_kill_9_during_a_sync_that_replaces_and_deletes(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", files=30)
    data = tmp_path / "data"
    timed_clean_run(corpus, data)
    # Change a third of the files, delete a few, add a few.
    rng = random.Random(11)
    notes = sorted(corpus.glob("note-*.md"))
    for path in rng.sample(notes, 10):
        path.write_text(path.read_text(encoding="utf-8")[::-1][:3000] + "\n\nrewritten\n", encoding="utf-8")
    for path in rng.sample([p for p in notes if p.exists()], 4):
        path.unlink()
    make_corpus(tmp_path / "extra", files=3, seed=99)
    for path in (tmp_path / "extra").glob("note-*.md"):
        shutil.move(str(path), corpus / f"extra-{path.name}")

    reference = tmp_path / "reference"
    duration = timed_clean_run(corpus, reference)
    expected, _ = index_snapshot(Settings(data_dir=reference))

    delays = random.Random(5).uniform(0.3 * duration, 0.8 * duration)
    kill_at(corpus, data, delays)
    result = run_ingest(corpus, data_dir=data)
    assert result.returncode == 0, result.stderr
    assert index_snapshot(Settings(data_dir=data)) == (expected, expected)


@pytest.fixture
def chroma_server(tmp_path: Path):
    port = free_port()
    chroma = Path(sys.executable).with_name("chroma")
    process = subprocess.Popen(
        [str(chroma), "run", "--path", str(tmp_path / "server-data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("chroma run did not start")
            time.sleep(0.3)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_server_mode_against_chroma_run(tmp_path: Path, samples_copy: Path, chroma_server: str) -> None:
    data = tmp_path / "data"
    first = run_ingest(samples_copy, "--collection", "served", data_dir=data, NOOK_CHROMA_URL=chroma_server)
    assert first.returncode == 0, first.stderr
    assert not (data / "chroma").exists()  # nothing went to the embedded store
    settings = Settings(data_dir=data, chroma_url=chroma_server, collection="served")
    ids, claimed = index_snapshot(settings)
    assert ids == claimed and len(ids) > 20

    (samples_copy / "notes" / "sourdough.md").unlink()
    second = run_ingest(samples_copy, "--collection", "served", data_dir=data, NOOK_CHROMA_URL=chroma_server)
    assert second.returncode == 0 and "1 deleted" in second.stdout
    ids_after, claimed_after = index_snapshot(settings)
    assert ids_after == claimed_after and len(ids_after) < len(ids)


def test_unreachable_chroma_server_is_one_line(tmp_path: Path, samples_copy: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_ingest(samples_copy / "notes", data_dir=tmp_path / "data", NOOK_CHROMA_URL=url)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "cannot reach the Chroma server" in result.stderr or "Chroma" in result.stderr
