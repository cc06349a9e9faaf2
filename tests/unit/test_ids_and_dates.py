from pathlib import Path

from ingest.pipeline import chunk_id, document_date, text_language


def test_chunk_id_is_stable_and_depends_on_every_part() -> None:
    base = chunk_id("/notes/a.md", 2, 100, "hello")
    assert base == chunk_id("/notes/a.md", 2, 100, "hello")
    others = {
        chunk_id("/notes/b.md", 2, 100, "hello"),
        chunk_id("/notes/a.md", 3, 100, "hello"),
        chunk_id("/notes/a.md", 2, 101, "hello"),
        chunk_id("/notes/a.md", 2, 100, "hello!"),
    }
    assert base not in others and len(others) == 4


def test_chunk_id_accepts_undecodable_file_names() -> None:
    name = b"/notes/caf\xe9.txt".decode("utf-8", "surrogateescape")
    assert chunk_id(name, None, 0, "x")


def test_document_date_from_name_front_matter_and_mtime() -> None:
    assert document_date(Path("diary/2024-03-12.md"), "", 0) == (20240312, "name")
    assert document_date(Path("notes/20231105-meeting.txt"), "", 0) == (20231105, "name")
    assert document_date(Path("x.md"), "---\ntitle: t\ndate: 2022-01-31\n---\nbody", 0) == (20220131, "front matter")
    # 2021-06-01 12:00 UTC
    assert document_date(Path("x.md"), "no date", 1622548800 * 10**9)[1] == "mtime"
    assert document_date(Path("2024-13-45.md"), "", 1622548800 * 10**9)[1] == "mtime"


def test_text_language() -> None:
    assert text_language("今天天气很好，我们去公园散步。") == "zh"
    assert text_language("The weather is nice today.") == "en"
    assert text_language("1234") == "en"
