"""`python -m ingest` end to end: the real embedding model, real embedded Chroma, real files."""

import json
import os
import shutil
from pathlib import Path

import pytest

from ingest.manifest import Manifest
from rag.config import Settings
from rag.embeddings import EMBEDDING_MODELS
from rag.store import open_client
from tests.conftest import SAMPLES
from tests.integration.helpers import run_ingest

pytestmark = pytest.mark.slow


def chroma_ids(data_dir: Path, collection: str = "nook") -> list[str]:
    client = open_client(Settings(data_dir=data_dir))
    return client.get_collection(collection).get(include=[])["ids"]


def test_ingest_sample_then_rerun_is_a_no_op(tmp_path: Path, samples_copy: Path) -> None:
    data = tmp_path / "data"
    first = run_ingest(samples_copy, data_dir=data)
    assert first.returncode == 0, first.stderr
    files = sum(1 for p in samples_copy.rglob("*") if p.is_file())
    assert f"{files} files seen, {files} new" in first.stdout
    ids = chroma_ids(data)
    assert len(ids) == len(set(ids)) > files

    second = run_ingest(samples_copy, "--json", data_dir=data)
    report = json.loads(second.stdout)
    assert second.returncode == 0
    assert (report["new"], report["changed"], report["deleted"], report["unchanged"]) == (0, 0, 0, files)
    assert sorted(chroma_ids(data)) == sorted(ids)


def test_changed_deleted_and_corrupt_files(tmp_path: Path, samples_copy: Path) -> None:
    data = tmp_path / "data"
    assert run_ingest(samples_copy, data_dir=data).returncode == 0
    note = samples_copy / "notes" / "home-admin.txt"
    note.write_text(note.read_text(encoding="utf-8") + "\nThe spare key is with Mrs Okafor at number 12.\n")
    os.utime(note, ns=(note.stat().st_atime_ns, note.stat().st_mtime_ns + 10**9))
    (samples_copy / "diary" / "2024-06-15.md").unlink()
    (samples_copy / "docs" / "broken.pdf").write_bytes(b"%PDF-1.5\nthis is not really a pdf")

    result = run_ingest(samples_copy, data_dir=data)
    assert result.returncode == 1
    assert "1 new" not in result.stdout  # the corrupt file is failed, not new
    assert "1 changed" in result.stdout and "1 deleted" in result.stdout and "1 failed" in result.stdout
    failed = [line for line in result.stdout.splitlines() if line.startswith("failed")]
    assert len(failed) == 1 and f"{samples_copy / 'docs' / 'broken.pdf'}: corrupt PDF" in failed[0]

    client = open_client(Settings(data_dir=data))
    collection = client.get_collection("nook")
    assert not collection.get(where={"source": str(samples_copy / "diary" / "2024-06-15.md")})["ids"]
    texts = collection.get(where={"source": str(note)})["documents"]
    assert any("Mrs Okafor" in t for t in texts)
    with Manifest(data / "manifest.sqlite3", "embedded", "nook") as manifest:
        claimed = {c for r in manifest.files().values() for c in r.chunk_ids}
    assert claimed == set(collection.get(include=[])["ids"])


def test_real_vectors_find_english_and_chinese_notes(tmp_path: Path, samples_copy: Path) -> None:
    from rag.embeddings import load_embedder

    data = tmp_path / "data"
    assert run_ingest(samples_copy, data_dir=data).returncode == 0
    collection = open_client(Settings(data_dir=data)).get_collection("nook")
    default_model = Settings().embedding_model
    assert collection.metadata["nook_embedding_model"] == default_model
    real_embedder = load_embedder(default_model)
    questions = [json.loads(line) for line in (SAMPLES.parent / "sample-questions.jsonl").read_text(encoding="utf-8").splitlines()]
    english = [q for q in questions if q["lang"] == "en" and q["kind"] == "lexical"]
    hits = 0
    for q in english:
        found = collection.query(query_embeddings=[real_embedder.embed_query(q["question"])], n_results=5)
        sources = [m["source"] for m in found["metadatas"][0]]
        hits += str(samples_copy / q["source"]) in sources
    # A floor, not the quality goal (that is measured in bench/): plain vector search must mostly work.
    assert hits / len(english) >= 0.8
    # The GBK note was decoded: its Chinese text is stored as Chinese.
    gbk = collection.get(where={"source": str(samples_copy / "notes" / "家庭药箱.txt")})["documents"]
    assert gbk and all("\ufffd" not in t for t in gbk)
    expected = (SAMPLES / "notes" / "家庭药箱.txt").read_bytes().decode("gbk")
    assert gbk[0][:20] in expected


def test_pdf_chunks_carry_their_page(tmp_path: Path, samples_copy: Path) -> None:
    data = tmp_path / "data"
    assert run_ingest(samples_copy / "docs", data_dir=data).returncode == 0
    collection = open_client(Settings(data_dir=data)).get_collection("nook")
    got = collection.get(where={"file_name": "bike-maintenance-log.pdf"}, include=["documents", "metadatas"])
    pages = {m["page"] for m in got["metadatas"]}
    assert pages == {1, 2, 3, 4}
    page_of = {d: m["page"] for d, m in zip(got["documents"], got["metadatas"], strict=True)}
    assert [p for d, p in page_of.items() if "116 links" in d] == [2]


def test_usage_and_settings_errors_exit_2(tmp_path: Path) -> None:
    missing = run_ingest(tmp_path / "nope", data_dir=tmp_path / "data")
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    bad = run_ingest(SAMPLES, data_dir=tmp_path / "data", NOOK_CHUNK_SIZE="ten")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "chunk_size" in bad.stderr


def test_model_mismatch_says_how_to_rebuild(tmp_path: Path, samples_copy: Path) -> None:
    data = tmp_path / "data"
    assert run_ingest(samples_copy / "notes", data_dir=data).returncode == 0
    # Pretend the collection was built by another model.
    client = open_client(Settings(data_dir=data))
    collection = client.get_collection("nook")
    collection.modify(metadata={"nook_embedding_model": "some-other-model", "nook_embedding_dim": 768})
    del client
    result = run_ingest(samples_copy / "notes", data_dir=data)
    assert result.returncode == 2
    assert "--rebuild" in result.stderr and result.stderr.strip().count("\n") == 0
    rebuilt = run_ingest(samples_copy / "notes", "--rebuild", data_dir=data)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert open_client(Settings(data_dir=data)).get_collection("nook").metadata["nook_embedding_model"] == (
        Settings().embedding_model
    )


def test_dry_run_lists_changes_without_writing(tmp_path: Path, samples_copy: Path) -> None:
    data = tmp_path / "data"
    result = run_ingest(samples_copy / "notes", "--dry-run", data_dir=data)
    assert result.returncode == 0
    assert result.stdout.count("new      ") == sum(1 for _ in (samples_copy / "notes").iterdir())
    assert not (data / "manifest.sqlite3").exists() or not Manifest(
        data / "manifest.sqlite3", "embedded", "nook"
    ).files()


def test_separate_collections(tmp_path: Path, samples_copy: Path) -> None:
    data = tmp_path / "data"
    assert run_ingest(samples_copy / "notes", "--collection", "notes", data_dir=data).returncode == 0
    assert run_ingest(samples_copy / "diary", "--collection", "diary", data_dir=data).returncode == 0
    client = open_client(Settings(data_dir=data))
    diary = client.get_collection("diary").get(include=["metadatas"])["metadatas"]
    notes = client.get_collection("notes").get(include=["metadatas"])["metadatas"]
    assert {m["folder"] for m in diary} == {str(samples_copy / "diary")}
    assert {m["folder"] for m in notes} == {str(samples_copy / "notes")}


def test_quiet_when_piped(tmp_path: Path, samples_copy: Path) -> None:
    result = run_ingest(samples_copy / "notes", data_dir=tmp_path / "data")
    assert "\r" not in result.stderr and "it/s" not in result.stderr and "file/s" not in result.stderr
    assert result.stderr.strip() == ""


def test_progress_bar_on_a_terminal(tmp_path: Path, samples_copy: Path) -> None:
    """With a terminal on stderr the command draws a progress bar with files, chunks and rate."""
    import pty
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.integration.helpers import nook_env

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "ingest", str(samples_copy / "notes")],
        cwd=ROOT, env=nook_env(tmp_path / "data"), stdout=subprocess.PIPE, stderr=follower, text=True,
    )
    os.close(follower)
    drawn = b""
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        drawn += data
    stdout, _ = process.communicate(timeout=300)
    os.close(leader)
    screen = drawn.decode("utf-8", "replace")
    assert process.returncode == 0
    files = sum(1 for _ in (samples_copy / "notes").iterdir())
    assert f"{files}/{files}" in screen and "chunks/s" in screen and "file" in screen
    assert "synced:" in stdout


def test_an_index_built_with_another_shipped_model_keeps_it_when_no_model_is_configured(
    tmp_path: Path, samples_copy: Path
) -> None:
    from tests.integration.test_rag_cli import run_rag

    data = tmp_path / "data"
    other = next(name for name in EMBEDDING_MODELS if name != Settings().embedding_model)
    built = run_ingest(samples_copy / "notes", data_dir=data, NOOK_EMBEDDING_MODEL=other)
    assert built.returncode == 0, built.stderr
    chunks = open_client(Settings(data_dir=data)).get_collection("nook").count()

    # No model configured: the sync and the search use the model the index was built with, and say so once.
    synced = run_ingest(samples_copy / "notes", data_dir=data)
    assert synced.returncode == 0, synced.stderr
    assert f"was built with {other}: using it" in synced.stderr and synced.stderr.count("\n") == 1
    assert "0 new, 0 changed" in synced.stdout
    found = run_rag("search", "What is my sourdough starter called?", "--json", data_dir=data)
    assert found.returncode == 0, found.stderr
    assert f"was built with {other}" in found.stderr
    assert json.loads(found.stdout)["results"][0]["source"].endswith("sourdough.md")
    collection = open_client(Settings(data_dir=data)).get_collection("nook")
    assert collection.metadata["nook_embedding_model"] == other and collection.count() == chunks

    # A model chosen explicitly is kept, and the mismatch is an error that says what to do.
    chosen = run_ingest(samples_copy / "notes", data_dir=data, NOOK_EMBEDDING_MODEL=Settings().embedding_model)
    assert chosen.returncode == 2 and "--rebuild" in chosen.stderr

    # A rebuild starts over with the default model.
    rebuilt = run_ingest(samples_copy / "notes", "--rebuild", data_dir=data)
    assert rebuilt.returncode == 0 and "was built with" not in rebuilt.stderr, rebuilt.stderr
    assert open_client(Settings(data_dir=data)).get_collection("nook").metadata["nook_embedding_model"] == (
        Settings().embedding_model
    )
