"""The same pipeline works against a real `chroma run` server. (The kill -9 tests are in test_crash_kills.py.)"""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ingest.manifest import Manifest
from rag.config import Settings
from rag.store import open_client
from tests.integration.helpers import free_port, run_ingest

pytestmark = pytest.mark.slow


def index_snapshot(settings: Settings) -> tuple[list[str], list[str]]:
    """(sorted ids in Chroma, sorted ids the manifest claims)."""
    collection = open_client(settings).get_collection(settings.collection)
    with Manifest(settings.manifest_path, settings.store_key, settings.collection) as manifest:
        claimed = sorted(c for r in manifest.files().values() for c in r.chunk_ids)
    return sorted(collection.get(include=[])["ids"]), claimed


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
