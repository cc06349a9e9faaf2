"""`python -m ingest` on a generated folder of hostile documents mixed with good ones (issue 6).

Every bad input is built here in tmp_path, so no broken blobs live in the repository. One ingest run (the real
embedding model, embedded Chroma) is shared by the tests below; each test checks one promise of
docs/RELIABILITY.md, "Hostile documents": a bad file is reported once, on one line, with its reason; a good file,
whatever its encoding or name, goes in and is found by its marker word; a re-run changes nothing; the index and the
manifest agree.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ingest.manifest import Manifest
from rag.config import Settings
from rag.store import iter_ids, open_client
from tests.conftest import ROOT, SAMPLES
from tests.integration.helpers import nook_env, run_ingest

pytestmark = pytest.mark.slow

MAX_FILE_MB = "1"
BIKE_PDF = SAMPLES / "docs" / "bike-maintenance-log.pdf"
ZH = "今天下午去了西湖，湖边的柳树已经发芽了。我们在断桥附近喝了龙井茶，价格是每杯三十八元。"
ZH_TRAD = "今天下午去了西湖，湖邊的柳樹已經發芽了。我們在斷橋附近喝了龍井茶，價格是每杯三十八元。"


@dataclass
class Corpus:
    """What was written, and what ingest must make of each path (paths as the scanner spells them)."""

    root: Path
    good: dict[str, str] = field(default_factory=dict)  # marker word -> the one file that must be its top hit
    failed: dict[str, str] = field(default_factory=dict)  # path -> words its failure reason must contain
    skipped: dict[str, str] = field(default_factory=dict)  # path -> words its "skipped" reason must contain
    ignored: set[str] = field(default_factory=set)  # paths that are not files to read: never reported, never indexed
    twins: tuple[str, str] = ("", "")  # the same content under two names
    chinese: dict[str, str] = field(default_factory=dict)  # path -> Chinese text its chunks must hold, decoded

    def write(self, relative: str | bytes, data: bytes, *, marker: str = "", fails: str = "", skips: str = "") -> str:
        """Write one file; relative may be bytes for names that are not valid UTF-8."""
        base = os.fsencode(self.root) if isinstance(relative, bytes) else str(self.root)
        path = os.path.join(base, relative)  # type: ignore[call-overload]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
        name = os.fsdecode(path)
        if marker:
            self.good[marker] = name
        if fails:
            self.failed[printable(name)] = fails
        if skips:
            self.skipped[name] = skips
        return name


def printable(path: str) -> str:
    """A path as ingest reports it: bytes that are not UTF-8 spelt as \\xNN."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def note(marker: str, topic: str) -> str:
    """A short English note that only this file's marker word identifies."""
    return (
        f"# {topic}\n\nThis note is about {topic.lower()}. The code word for this note is {marker}.\n\n"
        f"Nothing else in the corpus mentions {marker}, so a search for it must land here first.\n"
    )


def zh_note(marker: str) -> str:
    """A Chinese note carrying an ASCII marker word (the keyword side of retrieval finds it)."""
    return f"{ZH}\n\n记号：{marker}。这篇笔记只有这个记号。\n"


def pdf_with_rectangle_only() -> bytes:
    """A one-page PDF whose only content is a filled rectangle: pages, but no text layer."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, NameObject

    writer = PdfWriter()
    page = writer.add_blank_page(200, 200)
    stream = DecodedStreamObject()
    stream.set_data(b"0 0 1 rg 20 20 120 80 re f")
    page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def pdf_with_image_only() -> bytes:
    """A "scanned" page: one embedded image, no text."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (120, 80), "gray").save(out, format="PDF")
    return out.getvalue()


def encrypted_pdf() -> bytes:
    """The sample PDF locked with a user password."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(BIKE_PDF))
    writer.encrypt(user_password="secret", owner_password="owner-secret")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def zip_of(**members: str) -> bytes:
    """A valid zip archive with the given members."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return out.getvalue()


def noise(size: int, seed: int) -> bytes:
    """Deterministic binary junk (NUL bytes and all)."""
    import random

    return random.Random(seed).randbytes(size)


def build_corpus(root: Path) -> Corpus:
    """At least 30 bad inputs among good files, each good file with a unique marker word."""
    c = Corpus(root)
    bike = BIKE_PDF.read_bytes()
    garden = (SAMPLES / "docs" / "garden-plan-2024.docx").read_bytes()

    # ---- good files, plain
    c.write("good/english.txt", note("quillfeather", "Boiler service").encode(), marker="quillfeather")
    c.write("good/english.md", note("marrowlight", "Allotment rota").encode(), marker="marrowlight")
    c.write("good/chinese.md", zh_note("jadeharbor").encode(), marker="jadeharbor")
    shutil.copy(BIKE_PDF, root / "good" / "bike-maintenance-log.pdf")
    c.good["bike chain 116 links"] = str(root / "good" / "bike-maintenance-log.pdf")
    shutil.copy(SAMPLES / "docs" / "garden-plan-2024.docx", root / "good" / "garden-plan-2024.docx")
    c.good["Horfield Sungold"] = str(root / "good" / "garden-plan-2024.docx")

    # ---- good files in other encodings: read, never reported
    c.chinese[c.write("enc/gbk.txt", zh_note("gbkmarten").encode("gbk"), marker="gbkmarten")] = ZH
    big5 = f"{ZH_TRAD}\n\n記號：big5heron。\n".encode("big5")
    c.chinese[c.write("enc/big5.txt", big5, marker="big5heron")] = ZH_TRAD
    c.chinese[c.write("enc/utf16-le-bom.txt", zh_note("bomlynx").encode("utf-16"), marker="bomlynx")] = ZH
    be = b"\xfe\xff" + zh_note("bebadger").encode("utf-16-be")
    c.chinese[c.write("enc/utf16-be-bom.txt", be, marker="bebadger")] = ZH
    c.write("enc/utf16-le-no-bom.txt", note("nobomotter", "Window sizes").encode("utf-16-le"), marker="nobomotter")
    c.write(
        "enc/latin1.txt",
        ("Crème brûlée à Noël, façade naïve. Mot-clé: latinfinch.\n").encode("latin-1"),
        marker="latinfinch",
    )
    c.write("enc/crlf.txt", note("crlfwombat", "Line endings").replace("\n", "\r\n").encode(), marker="crlfwombat")
    # UTF-8 and GBK in one file: no single encoding fits; the ASCII words must survive whatever the guess.
    mixed = "Mixed encodings, code word mixedpangolin, café.\n".encode() + ZH.encode("gbk") + "\n结束。\n".encode()
    c.chinese[c.write("enc/mixed-utf8-gbk.txt", mixed, marker="mixedpangolin")] = ZH
    # UTF-16 cut one byte short (a copy that stopped early): the last half character is lost, not the file.
    cut = zh_note("halfcharcrane").encode("utf-16")[:-1]
    c.chinese[c.write("enc/utf16-cut-mid-character.txt", cut, marker="halfcharcrane")] = ZH

    # ---- good files with hostile names
    c.write("names/notes with  spaces .md", note("spacegecko", "Spaces").encode(), marker="spacegecko")
    c.write("names/🚲 ride log 🌧️.md", note("emojimarmot", "Rainy ride").encode(), marker="emojimarmot")
    c.write("names/two\nlines.md", note("newlinequokka", "Newline names").encode(), marker="newlinequokka")
    # A name that is not UTF-8 cannot be stored by Chroma or SQLite: reported (once per file or folder), not read.
    c.write(b"names/caf\xe9-latin1-name.txt", note("bytesnamejackal", "Byte names").encode(), fails="not valid UTF-8")
    c.write(b"names/\xff\xfe-broken.docx", b"not a zip", fails="not valid UTF-8")
    c.write(b"names/d\xe9j\xe0-vu/inside.md", note("bytesfolderyak", "Byte folders").encode())
    c.failed[printable(os.fsdecode(os.path.join(os.fsencode(root), b"names/d\xe9j\xe0-vu")))] = "not valid UTF-8"
    deep = "/".join(f"d{level:02d}" for level in range(40))
    c.write(f"deep/{deep}/bottom.md", note("deepaardvark", "Deep folders").encode(), marker="deepaardvark")
    twin = note("twinokapi", "Same content twice").encode()
    c.twins = (c.write("dup/first copy.md", twin), c.write("dup/second copy.md", twin))
    # A malformed e-mail the lenient parser still reads: headers without colons, an unclosed MIME boundary,
    # an unknown charset. Its plain body is what counts.
    c.write(
        "mail/malformed.eml",
        b"From ann@example.org Sat Mar  2\nSubject: half a header\nthis line has no colon\n"
        b'Content-Type: multipart/mixed; boundary="never-closed"\n\n--never-closed\n'
        b"Content-Type: text/plain; charset=x-klingon\n\nThe code word is emlnarwhal, spelt plainly.\n",
        marker="emlnarwhal",
    )

    # ---- bad files: each must be reported once, with its reason
    c.write("pdf/truncated.pdf", bike[: len(bike) // 3], fails="corrupt PDF")
    c.write("pdf/garbage-after-header.pdf", b"%PDF-1.7\n" + noise(4000, 1), fails="corrupt PDF")
    c.write("pdf/header-only.pdf", b"%PDF-1.4\n", fails="corrupt PDF")
    c.write("pdf/encrypted.pdf", encrypted_pdf(), fails="encrypted PDF")
    c.write("pdf/rectangle-only.pdf", pdf_with_rectangle_only(), fails="no text layer")
    c.write("pdf/scanned-image.pdf", pdf_with_image_only(), fails="no text layer")
    c.write("pdf/empty.pdf", b"", fails="empty file")
    c.write("text/empty.txt", b"", fails="empty file")
    c.write("text/blank.md", b" \n\t\n  \n", fails="empty file")
    c.write("text/binary.txt", noise(8000, 2), fails="not text")
    c.write("text/binary.rst", noise(3000, 3), fails="not text")
    c.write("text/pdf-named.txt", bike, fails="not text")
    c.write("text/too-large.txt", (note("hugeibex", "Huge") * 12_000)[: 2 * 1024 * 1024].encode(), fails="too large")
    c.write("office/not-a-zip.docx", b"Plain words pretending to be a Word document.\n", fails="corrupt DOCX")
    c.write("office/zip-not-a-document.docx", zip_of(**{"notes.txt": "hello"}), fails="corrupt DOCX")
    c.write("office/truncated.docx", garden[: len(garden) // 2], fails="corrupt DOCX")
    c.write("office/empty.docx", b"", fails="empty file")
    c.write(
        "web/scripts-only.html",
        b"<html><head><script>var secret = 'htmlscriptmoth';</script><style>p{color:red}</style></head>"
        b"<body><script>document.write('hello')</script><noscript></noscript></body></html>",
        fails="no text",
    )
    c.write("mail/binary.eml", noise(3000, 4), fails="not text")
    c.write("data/nul-byte.csv", b"name,value\nalpha,1\nbe\x00ta,2\n", fails="not text")
    c.write("books/not-a-zip.epub", b"An epub is a zip archive; this is not one.", fails="corrupt EPUB")
    c.write("books/zip-not-an-epub.epub", zip_of(mimetype="application/epub+zip"), fails="corrupt EPUB")
    c.write("names/broken\nreport.pdf", b"%PDF-1.5\nnot really", fails="corrupt PDF")
    c.write("names/💥 broken scan.pdf", pdf_with_image_only(), fails="no text layer")

    # ---- files of types Nook does not read: reported once as skipped
    c.write("misc/photo.jpg", b"\xff\xd8\xff\xe0" + noise(2000, 5), skips="unsupported file type")
    c.write("misc/blob.dat", noise(2000, 6), skips="not text")

    # ---- links and special files
    links = root / "links"
    links.mkdir()
    os.symlink("does-not-exist.md", links / "dangling.md")
    c.failed[str(links / "dangling.md")] = "broken link"
    os.symlink("ping.md", links / "pong.md")
    os.symlink("pong.md", links / "ping.md")  # a loop of file links: stat says "too many levels"
    c.failed[str(links / "ping.md")] = "cannot stat"
    c.failed[str(links / "pong.md")] = "cannot stat"
    loop = root / "loop" / "inner"
    loop.mkdir(parents=True)
    os.symlink("..", loop / "up")  # a folder link to its parent: walking into it would never end
    os.symlink(str(root), root / "loop" / "root")
    c.ignored |= {str(loop / "up"), str(root / "loop" / "root")}
    os.mkfifo(root / "misc" / "pipe.txt")  # opening a FIFO blocks forever: it must not be opened
    c.ignored.add(str(root / "misc" / "pipe.txt"))
    return c


# ------------------------------------------------------------------ one run shared by the tests


@dataclass
class Run:
    """The corpus, the first ingest (text output) and the second one (--json)."""

    corpus: Corpus
    data: Path
    first: subprocess.CompletedProcess
    second: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    base = tmp_path_factory.mktemp("hostile")
    corpus = build_corpus(base / "corpus")
    data = base / "data"
    first = run_ingest(corpus.root, data_dir=data, timeout=900, NOOK_MAX_FILE_MB=MAX_FILE_MB)
    second = run_ingest(corpus.root, "--json", data_dir=data, timeout=600, NOOK_MAX_FILE_MB=MAX_FILE_MB)
    return Run(corpus, data, first, second)


def report_lines(output: str, kind: str) -> list[str]:
    """The lines of the text report that start with kind ("failed" or "skipped")."""
    return [line for line in output.splitlines() if line.startswith(f"{kind} ")]


def one_line(path: str) -> str:
    """A path as the report prints it on one line."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace").replace("\n", "\\n")


def test_the_corpus_holds_at_least_thirty_bad_inputs(run: Run) -> None:
    bad = len(run.corpus.failed) + len(run.corpus.skipped) + len(run.corpus.ignored)
    assert bad >= 30, bad
    assert len(run.corpus.good) >= 15


def test_ingest_finishes_with_exit_code_1_and_no_traceback(run: Run) -> None:
    assert run.first.returncode == 1, run.first.stdout + run.first.stderr
    assert "Traceback" not in run.first.stderr and "Traceback" not in run.second.stderr
    assert run.first.stderr.strip() == "", run.first.stderr


def test_each_bad_file_is_reported_once_on_one_line_with_its_reason(run: Run) -> None:
    out = run.first.stdout
    for kind, expected in (("failed", run.corpus.failed), ("skipped", run.corpus.skipped)):
        lines = report_lines(out, kind)
        assert len(lines) == len(expected), "\n".join(lines)
        for path, reason in expected.items():
            mine = [line for line in lines if line.startswith(f"{kind:8} {one_line(path)}: ")]
            assert len(mine) == 1, (path, lines)
            assert reason in mine[0], mine[0]
    summary = out.strip().splitlines()[-1]
    assert f"{len(run.corpus.failed)} failed, {len(run.corpus.skipped)} skipped" in summary


def test_good_files_in_any_encoding_or_name_are_not_reported(run: Run) -> None:
    reported = "\n".join(report_lines(run.first.stdout, "failed") + report_lines(run.first.stdout, "skipped"))
    for path in [*run.corpus.good.values(), *run.corpus.twins, *run.corpus.ignored]:
        assert one_line(path) not in reported, path


def test_every_good_file_is_the_top_hit_for_its_marker(run: Run) -> None:
    markers = list(run.corpus.good)
    result = subprocess.run(
        [sys.executable, "-m", "rag", "search", "-k", "3"],
        cwd=ROOT,
        env=nook_env(run.data, NOOK_MAX_FILE_MB=MAX_FILE_MB),
        input="\n".join(markers) + "\n",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["question"] for a in answers] == markers
    for marker, answer in zip(markers, answers, strict=True):
        top = answer["results"][0]
        assert top["source"] == run.corpus.good[marker], (marker, [r["source"] for r in answer["results"]])
        if marker.isalnum():
            assert marker in top["text"]


def test_text_in_other_encodings_is_stored_as_decoded_chinese(run: Run) -> None:
    collection = open_client(Settings(data_dir=run.data)).get_collection("nook")
    for path, chinese in run.corpus.chinese.items():
        stored = "".join(collection.get(where={"source": path})["documents"])
        assert chinese in stored and "\ufffd" not in stored, (path, stored[:80])


def test_the_same_content_under_two_names_is_kept_under_both(run: Run) -> None:
    collection = open_client(Settings(data_dir=run.data)).get_collection("nook")
    for path in run.corpus.twins:
        assert collection.get(where={"source": path}, include=[])["ids"], path


def test_a_second_run_changes_nothing(run: Run) -> None:
    assert run.second.returncode == 1, run.second.stderr
    report = json.loads(run.second.stdout)
    assert (report["new"], report["changed"], report["deleted"]) == (0, 0, 0)
    assert (report["chunks_added"], report["chunks_removed"]) == (0, 0)
    assert sorted(path for path, _ in report["failures"]) == sorted(run.corpus.failed)


def test_the_index_holds_exactly_the_chunks_the_manifest_claims(run: Run) -> None:
    collection = open_client(Settings(data_dir=run.data)).get_collection("nook")
    ids = list(iter_ids(collection))
    assert len(ids) == len(set(ids))
    with Manifest(run.data / "manifest.sqlite3", "embedded", "nook") as manifest:
        records = manifest.files()
        failures = manifest.failures()
    claimed = [cid for record in records.values() for cid in record.chunk_ids]
    assert len(claimed) == len(set(claimed))
    assert set(claimed) == set(ids)
    assert set(failures) == set(run.corpus.failed)
    assert not set(records) & set(failures)
    assert all(record.chunk_ids for record in records.values())
    # Nothing else went in: no path through the looping links, no half-read bad file.
    assert set(records) == {*run.corpus.good.values(), *run.corpus.twins}


def test_a_file_without_read_permission_is_reported_and_the_rest_goes_in(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "open.md").write_text(note("openvole", "Readable"), encoding="utf-8")
    locked = folder / "locked.md"
    locked.write_text(note("lockedshrew", "Unreadable"), encoding="utf-8")
    locked.chmod(0)
    try:
        try:
            locked.open("rb").close()
        except PermissionError:
            pass
        else:  # root (CI, this container) reads any file whatever its mode: nothing to test here
            pytest.skip("this user reads a chmod 000 file anyway (root); tests/unit fakes the refusal instead")
        result = run_ingest(folder, data_dir=tmp_path / "data")
    finally:
        locked.chmod(0o644)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert report_lines(result.stdout, "failed") == [f"failed   {locked}: permission denied"]
    assert "1 new" in result.stdout
