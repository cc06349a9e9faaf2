"""Sync logic against the real embedded Chroma, with a fake embedder so it runs in seconds."""

import os
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ingest.manifest import Manifest
from ingest.pipeline import IngestPipeline
from rag.config import Settings
from rag.errors import EmbeddingModelMismatch
from rag.store import open_client, open_collection
from tests.fakes import HashEmbedder


def make(settings: Settings, embedder: HashEmbedder | None = None) -> IngestPipeline:
    return IngestPipeline(settings, embedder or HashEmbedder())


def index_state(settings: Settings) -> tuple[set[str], set[str], dict[str, int]]:
    """(ids in Chroma, ids in the manifest, chunks per source in Chroma)."""
    client = open_client(settings)
    collection = client.get_collection(settings.collection)
    got = collection.get(include=["metadatas"])
    per_source: dict[str, int] = {}
    for meta in got["metadatas"]:
        per_source[meta["source"]] = per_source.get(meta["source"], 0) + 1
    with Manifest(settings.manifest_path, settings.store_key, settings.collection) as manifest:
        claimed = {cid for rec in manifest.files().values() for cid in rec.chunk_ids}
    return set(got["ids"]), claimed, per_source


def bump_mtime(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


def test_first_sync_ingests_every_sample_file(settings: Settings, samples_copy: Path) -> None:
    report = make(settings).sync([samples_copy])
    files = [p for p in samples_copy.rglob("*") if p.is_file()]
    assert report.failures == []
    assert report.new == len(files)
    in_chroma, in_manifest, per_source = index_state(settings)
    assert in_chroma == in_manifest
    assert report.chunks_added == len(in_chroma)
    assert set(per_source) == {str(p) for p in files}


def test_rerun_is_a_no_op_that_embeds_nothing(settings: Settings, samples_copy: Path) -> None:
    make(settings).sync([samples_copy])
    before = index_state(settings)
    embedder = HashEmbedder()
    report = make(settings, embedder).sync([samples_copy])
    assert (report.new, report.changed, report.deleted, report.chunks_added, report.chunks_removed) == (0, 0, 0, 0, 0)
    assert report.unchanged == report.seen
    assert embedder.calls == []
    assert index_state(settings) == before


def test_touched_but_unchanged_file_is_not_re_embedded(settings: Settings, samples_copy: Path) -> None:
    make(settings).sync([samples_copy])
    bump_mtime(samples_copy / "notes" / "sourdough.md")
    embedder = HashEmbedder()
    report = make(settings, embedder).sync([samples_copy])
    assert report.changed == 0 and embedder.calls == []


def test_changed_file_replaces_its_chunks(settings: Settings, samples_copy: Path) -> None:
    make(settings).sync([samples_copy])
    note = samples_copy / "notes" / "sourdough.md"
    note.write_text(note.read_text(encoding="utf-8") + "\n\n## Update\n\nNow I bake with rye flour only.\n", "utf-8")
    bump_mtime(note)
    report = make(settings).sync([samples_copy])
    assert report.changed == 1 and report.new == 0
    in_chroma, in_manifest, _ = index_state(settings)
    assert in_chroma == in_manifest
    client = open_client(settings)
    texts = client.get_collection(settings.collection).get(where={"source": str(note)})["documents"]
    assert any("rye flour only" in t for t in texts)
    # Rewriting the file entirely leaves none of the old chunks behind.
    note.write_text("# Short\n\nOnly this line is left.\n", "utf-8")
    bump_mtime(note)
    report = make(settings).sync([samples_copy])
    texts = client.get_collection(settings.collection).get(where={"source": str(note)})["documents"]
    assert texts == ["# Short\n\nOnly this line is left."]
    assert report.chunks_removed > 0


def test_deleted_file_disappears(settings: Settings, samples_copy: Path) -> None:
    make(settings).sync([samples_copy])
    gone = samples_copy / "diary" / "2024-03-04.md"
    gone.unlink()
    report = make(settings).sync([samples_copy])
    assert report.deleted == 1
    in_chroma, in_manifest, per_source = index_state(settings)
    assert str(gone) not in per_source and in_chroma == in_manifest


def test_files_outside_the_given_roots_are_kept(settings: Settings, samples_copy: Path) -> None:
    make(settings).sync([samples_copy / "diary", samples_copy / "notes"])
    report = make(settings).sync([samples_copy / "notes"])
    assert report.deleted == 0
    _, _, per_source = index_state(settings)
    assert any("/diary/" in s for s in per_source)


def test_dry_run_reports_and_changes_nothing(settings: Settings, samples_copy: Path) -> None:
    plan = make(settings).sync([samples_copy], dry_run=True)
    assert plan.new == sum(1 for p in samples_copy.rglob("*") if p.is_file())
    assert not open_client(settings).list_collections()
    make(settings).sync([samples_copy])
    (samples_copy / "notes" / "home-admin.txt").unlink()
    (samples_copy / "notes" / "new.md").write_text("# New\n\nA new note.\n", "utf-8")
    before = index_state(settings)
    plan = make(settings).sync([samples_copy], dry_run=True)
    assert plan.planned["new"] == [str(samples_copy / "notes" / "new.md")]
    assert plan.planned["deleted"] == [str(samples_copy / "notes" / "home-admin.txt")]
    assert index_state(settings) == before


def test_bad_files_are_reported_and_the_rest_goes_in(settings: Settings, samples_copy: Path) -> None:
    (samples_copy / "broken.pdf").write_bytes(b"%PDF-1.7\n garbage")
    (samples_copy / "noise.txt").write_bytes(os.urandom(4096))
    (samples_copy / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    report = make(settings).sync([samples_copy])
    reasons = dict(report.failures)
    assert set(reasons) == {str(samples_copy / "broken.pdf"), str(samples_copy / "noise.txt")}
    assert "PDF" in reasons[str(samples_copy / "broken.pdf")]
    assert "not text" in reasons[str(samples_copy / "noise.txt")]
    assert [p for p, _ in report.skipped_files] == [str(samples_copy / "picture.png")]
    _, _, per_source = index_state(settings)
    assert str(samples_copy / "diary" / "2024-05-03.md") in per_source
    with Manifest(settings.manifest_path, settings.store_key, settings.collection) as manifest:
        assert set(manifest.failures()) == set(reasons)


def test_a_changed_file_that_became_unreadable_keeps_its_old_chunks(settings: Settings, samples_copy: Path) -> None:
    make(settings).sync([samples_copy])
    pdf = samples_copy / "docs" / "bike-maintenance-log.pdf"
    _, _, before = index_state(settings)
    pdf.write_bytes(pdf.read_bytes()[:200])
    report = make(settings).sync([samples_copy])
    assert [p for p, _ in report.failures] == [str(pdf)]
    _, _, after = index_state(settings)
    assert after[str(pdf)] == before[str(pdf)]


def test_changed_chunk_settings_re_chunk_every_file(settings: Settings, samples_copy: Path) -> None:
    make(settings).sync([samples_copy])
    smaller = settings.model_copy(update={"chunk_size": 30, "chunk_overlap": 5})
    report = make(smaller).sync([samples_copy])
    assert report.changed == report.seen
    in_chroma, in_manifest, _ = index_state(smaller)
    assert in_chroma == in_manifest


def test_a_new_revision_of_the_same_model_re_embeds_every_file(settings: Settings, samples_copy: Path) -> None:
    """A model whose chunk vectors change under the same name (the pair's revision 1) re-indexes on the next sync."""
    make(settings).sync([samples_copy])
    assert make(settings).sync([samples_copy]).changed == 0
    revised = HashEmbedder()
    revised.spec = SimpleNamespace(revision=1, max_tokens=None)  # type: ignore[attr-defined]
    report = make(settings, revised).sync([samples_copy])
    assert report.changed == report.seen > 0
    in_chroma, in_manifest, _ = index_state(settings)
    assert sum(revised.calls) == len(in_chroma) > 0  # every chunk embedded again, not just the changed ones
    assert in_chroma == in_manifest
    assert make(settings, revised).sync([samples_copy]).changed == 0


def test_other_embedding_model_is_refused_until_rebuild(settings: Settings, samples_copy: Path) -> None:
    make(settings).sync([samples_copy / "notes"])
    other = HashEmbedder(name="other-model", dim=32)
    with pytest.raises(EmbeddingModelMismatch, match="--rebuild"):
        make(settings, other).sync([samples_copy / "notes"])
    report = make(settings, other).sync([samples_copy / "notes"], rebuild=True)
    assert report.new == report.seen
    collection = open_collection(open_client(settings), settings.collection, "other-model", 32, create=False)
    assert collection is not None and collection.count() == report.chunks_added


def test_collections_are_separate(settings: Settings, samples_copy: Path) -> None:
    make(settings).sync([samples_copy / "notes"])
    work = settings.model_copy(update={"collection": "work"})
    make(work).sync([samples_copy / "diary"])
    _, _, notes = index_state(settings)
    _, _, diary = index_state(work)
    assert all("/notes/" in s for s in notes) and all("/diary/" in s for s in diary)


def test_reconcile_after_an_interrupted_run(settings: Settings, samples_copy: Path) -> None:
    """Simulates the states a kill -9 can leave; the real kill test is in tests/integration."""
    make(settings).sync([samples_copy])
    client = open_client(settings)
    collection = client.get_collection(settings.collection)
    # An orphan chunk that no manifest row claims, and a row whose chunks vanished from Chroma.
    collection.upsert(ids=["orphan-1"], documents=["stray"], embeddings=[[0.1] * 64], metadatas=[{"source": "x"}])
    victim = str(samples_copy / "notes" / "sourdough.md")
    with Manifest(settings.manifest_path, settings.store_key, settings.collection) as manifest:
        lost = manifest.files()[victim].chunk_ids
        manifest.set_dirty(True)
    collection.delete(ids=list(lost[:1]))
    report = make(settings).sync([samples_copy])
    assert report.recovered and report.new == 1
    in_chroma, in_manifest, per_source = index_state(settings)
    assert in_chroma == in_manifest and "orphan-1" not in in_chroma
    assert per_source[victim] == len(lost)


def test_hidden_folders_and_the_data_dir_are_not_ingested(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    (notes / ".obsidian").mkdir(parents=True)
    (notes / ".obsidian" / "workspace.json").write_text('{"a": 1}')
    (notes / "visible.md").write_text("# Visible\n\nhello")
    settings = Settings(data_dir=notes / "index", chunk_size=60, chunk_overlap=10)
    make(settings).sync([notes])
    report = make(settings).sync([notes])
    assert report.seen == 1 and report.unchanged == 1


def test_progress_callback_reaches_the_total(settings: Settings, samples_copy: Path) -> None:
    seen: list[tuple[int, int, int]] = []
    report = make(settings).sync([samples_copy], on_progress=lambda d, t, c: seen.append((d, t, c)))
    assert seen[-1][0] == seen[-1][1] == report.new
    assert seen[-1][2] == report.chunks_added
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)


def test_unreadable_file_is_reported(settings: Settings, samples_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod 000 does not stop root (CI runs as root), so the refusal comes from open() itself.
    locked = samples_copy / "notes" / "home-admin.txt"
    real_open = open

    def guarded_open(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    report = make(settings).sync([samples_copy])
    assert dict(report.failures)[str(locked)] == "permission denied"
    assert report.new == report.seen - 1


def test_too_large_file_is_reported_and_not_read(settings: Settings, samples_copy: Path) -> None:
    tiny = settings.model_copy(update={"max_file_mb": 0.001})  # about 1 KB
    big = samples_copy / "notes" / "sourdough.md"
    assert big.stat().st_size > 1100
    report = make(tiny).sync([samples_copy / "notes"])
    reasons = dict(report.failures)
    assert reasons[str(big)].startswith("too large")
    _, _, per_source = index_state(tiny)
    assert str(big) not in per_source


def test_an_unreadable_folder_does_not_delete_its_documents(
    settings: Settings, samples_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make(settings).sync([samples_copy])
    diary = str(samples_copy / "diary")
    real_walk = os.walk

    def walk(top, onerror=None, followlinks=False):  # type: ignore[no-untyped-def]
        for folder, dirs, files in real_walk(top, onerror=onerror, followlinks=followlinks):
            if folder == diary:  # as if the folder had become unreadable (root ignores chmod)
                if onerror:
                    onerror(PermissionError(13, "Permission denied", diary))
                dirs[:] = []
                continue
            yield folder, dirs, files

    monkeypatch.setattr("ingest.pipeline.os.walk", walk)
    report = make(settings).sync([samples_copy])
    assert report.deleted == 0
    assert dict(report.failures)[diary].startswith("cannot read folder")
    _, _, per_source = index_state(settings)
    assert any(s.startswith(diary + "/") for s in per_source)


def test_names_that_are_not_utf8_are_reported_once_and_the_rest_goes_in(settings: Settings, tmp_path: Path) -> None:
    # Chroma and SQLite hold UTF-8 only: such a name used to crash the whole run at the first write.
    root = tmp_path / "names"
    root.mkdir()
    (root / "fine.md").write_text("A readable note about the shed roof.", encoding="utf-8")
    base = os.fsencode(root)
    with open(os.path.join(base, b"caf\xe9.md"), "wb") as handle:
        handle.write(b"Latin-1 name.")
    os.mkdir(os.path.join(base, b"d\xe9j\xe0"))
    with open(os.path.join(base, b"d\xe9j\xe0", b"inside.md"), "wb") as handle:
        handle.write(b"Inside a folder with a Latin-1 name.")
    report = make(settings).sync([root])
    assert sorted(report.failures) == [
        (f"{root}/caf\\xe9.md", "name is not valid UTF-8 (rename it to index it)"),
        (f"{root}/d\\xe9j\\xe0", "name is not valid UTF-8 (rename it to index it)"),
    ]
    assert report.new == 1
    ids, claimed, per_source = index_state(settings)
    assert ids == claimed and set(per_source) == {str(root / "fine.md")}


def test_chunks_stay_within_what_the_embedding_model_reads() -> None:
    from rag.embeddings import LazyEmbedder, chunking_for

    minilm = LazyEmbedder("all-MiniLM-L6-v2")  # reads 256 positions: a 400-token chunk would be cut silently
    assert chunking_for(400, 60, minilm) == (254, 60)
    assert chunking_for(200, 30, minilm) == (200, 30)
    assert chunking_for(400, 60, LazyEmbedder("multilingual-use-v3")) == (400, 60)  # no length limit
    assert chunking_for(400, 60, HashEmbedder()) == (400, 60)  # a model without a registry entry is not limited


class OverlapProbe(HashEmbedder):
    """Embeds each batch only once the pipeline has split some text while it was embedding (or gives up waiting)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = threading.Event()
        self.split_meanwhile = threading.Event()
        self.overlapped: list[bool] = []
        self.threads: set[str] = set()

    def count_tokens(self, text: str) -> int:
        if self.embedding.is_set():
            self.split_meanwhile.set()
        return super().count_tokens(text)

    def encode(self, texts):
        self.threads.add(threading.current_thread().name)
        self.split_meanwhile.clear()
        self.embedding.set()
        # Only the first batch waits: after the last one there is nothing left to split.
        self.overlapped.append(self.split_meanwhile.wait(timeout=10 if not self.overlapped else 0))
        self.embedding.clear()
        return super().encode(texts)


def test_the_next_files_are_split_while_a_batch_is_embedded(settings: Settings, samples_copy: Path) -> None:
    probe = OverlapProbe()
    report = IngestPipeline(settings, probe, flush_chunks=1).sync([samples_copy])
    assert probe.overlapped[0], "the first batch was embedded with nothing split meanwhile"
    assert threading.current_thread().name not in probe.threads
    in_chroma, in_manifest, per_source = index_state(settings)
    assert in_chroma == in_manifest and report.chunks_added == len(in_chroma)
    assert len(per_source) == report.new == len([p for p in samples_copy.rglob("*") if p.is_file()])


class FailsOnSecondBatch(HashEmbedder):
    def encode(self, texts):
        if len(self.calls) == 1:
            self.calls.append(len(texts))
            raise RuntimeError("the embedding model ran out of memory")
        return super().encode(texts)


def test_an_embedding_failure_stops_the_run_and_the_index_stays_consistent(
    settings: Settings, samples_copy: Path
) -> None:
    with pytest.raises(RuntimeError, match="out of memory"):
        IngestPipeline(settings, FailsOnSecondBatch(), flush_chunks=1).sync([samples_copy])
    in_chroma, in_manifest, per_source = index_state(settings)
    # The first batch's files are stored and claimed; nothing of the failed batch or after it is.
    assert in_chroma == in_manifest and len(per_source) == 1
    report = make(settings).sync([samples_copy])
    in_chroma, in_manifest, per_source = index_state(settings)
    assert in_chroma == in_manifest
    assert len(per_source) == len([p for p in samples_copy.rglob("*") if p.is_file()])
    assert report.unchanged == 1
