import zipfile
from pathlib import Path

import pytest

from ingest.loaders import NotSupported, decode_text, html_to_text, load_file
from rag.errors import DocumentError
from tests.conftest import SAMPLES

CHINESE = "今天下午去了西湖，湖边的柳树已经发芽了。我们在断桥附近喝了龙井茶，价格是每杯三十八元。"
TRAD = "今天下午去了西湖，湖邊的柳樹已經發芽了。我們在斷橋附近喝了龍井茶，價格是每杯三十八元。"


def load(path: Path) -> str:
    return "\n".join(p.text for p in load_file(path, path.read_bytes()))


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        (CHINESE, "gbk"),
        (CHINESE, "gb18030"),
        (TRAD, "big5"),
        (CHINESE, "utf-16"),  # with BOM
        ("Plain notes about the garden.\nSecond line.", "utf-16-le"),  # no BOM
        ("Café au lait, crème brûlée, naïve façade: déjà vu à Noël.", "latin-1"),
        (CHINESE + "\nEnglish too.", "utf-8"),
        ("Mit freundlichen Grüßen", "utf-8-sig"),
    ],
)
def test_text_in_many_encodings_is_decoded(text: str, encoding: str, tmp_path: Path) -> None:
    path = tmp_path / "note.txt"
    path.write_bytes(text.encode(encoding))
    assert load(path).strip() == text


def test_gbk_sample_note_is_read_as_chinese() -> None:
    path = SAMPLES / "notes" / "家庭药箱.txt"
    raw = path.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert load(path) == raw.decode("gbk").replace("\r\n", "\n")


def test_binary_named_txt_is_a_document_error(tmp_path: Path) -> None:
    path = tmp_path / "fake.txt"
    path.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(DocumentError, match="not text"):
        load(path)


def test_empty_file_is_a_document_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.md"
    path.write_bytes(b"")
    with pytest.raises(DocumentError, match="empty"):
        load(path)


def test_unknown_extension_is_sniffed(tmp_path: Path) -> None:
    text_file = tmp_path / "README.notes"
    text_file.write_text("A text file with an odd extension.", encoding="utf-8")
    assert "odd extension" in load(text_file)
    binary = tmp_path / "blob.dat"
    binary.write_bytes(b"\x00\x01\x02\xff" * 500)
    with pytest.raises(NotSupported):
        load(binary)
    image = tmp_path / "photo.jpg"
    image.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    with pytest.raises(NotSupported, match="unsupported"):
        load(image)


def test_pdf_has_one_page_each_with_its_number() -> None:
    path = SAMPLES / "docs" / "bike-maintenance-log.pdf"
    pages = load_file(path, path.read_bytes())
    assert [p.page for p in pages] == [1, 2, 3, 4]
    assert "116 links" in pages[1].text
    assert all("116 links" not in p.text for i, p in enumerate(pages) if i != 1)


def test_chinese_pdf_text_is_extracted() -> None:
    path = SAMPLES / "docs" / "空气净化器说明书.pdf"
    pages = load_file(path, path.read_bytes())
    assert len(pages) == 2
    assert sum(1 for ch in pages[0].text if "\u4e00" <= ch <= "\u9fff") > 50


def test_corrupt_and_truncated_pdfs_are_document_errors(tmp_path: Path) -> None:
    good = (SAMPLES / "docs" / "bike-maintenance-log.pdf").read_bytes()
    for name, data in {"garbage.pdf": b"%PDF-1.4 nothing else", "cut.pdf": good[: len(good) // 3]}.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DocumentError) as info:
            load(path)
        assert "PDF" in info.value.reason


def test_docx_headings_become_markdown_headings() -> None:
    path = SAMPLES / "docs" / "garden-plan-2024.docx"
    text = load(path)
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert any(line.startswith("# ") for line in headings)
    assert any(line.startswith("## ") for line in headings)


def test_docx_that_is_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "report.docx"
    path.write_bytes(b"this is not a zip file at all")
    with pytest.raises(DocumentError, match="corrupt DOCX"):
        load(path)


def test_html_drops_scripts_and_styles_and_keeps_structure() -> None:
    path = SAMPLES / "docs" / "marlow-road-newsletter.html"
    text = load(path)
    assert "STYLE_BLOCK_MUST_NOT_BE_INDEXED" not in text
    assert "SCRIPT_BLOCK_MUST_NOT_BE_INDEXED" not in text
    assert "Subscribe to the newsletter" not in text
    assert "Bernadette" in text
    assert any(line.startswith("# ") for line in text.splitlines())


def test_html_to_text_keeps_table_cells_apart() -> None:
    text = html_to_text("<table><tr><td>Bin day</td><td>Tuesday</td></tr></table><p>After</p>")
    assert "Bin day | Tuesday" in text and "After" in text


def test_csv_rows_become_labelled_lines(tmp_path: Path) -> None:
    path = tmp_path / "books.csv"
    path.write_text("title,author,year\nSmall Rooms,Ada Quill,2019\n小屋,李明,2020\n", encoding="utf-8")
    text = load(path)
    assert "title: Small Rooms; author: Ada Quill; year: 2019" in text
    assert "author: 李明" in text


def test_eml_has_subject_headers_and_body(tmp_path: Path) -> None:
    path = tmp_path / "mail.eml"
    path.write_bytes(
        "From: Ann <ann@example.org>\nTo: me@example.org\nSubject: =?utf-8?b?5pif5pyf5YWt?= picnic\n"
        "Date: Sat, 02 Mar 2024 10:00:00 +0000\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n\nBring the red blanket and 两瓶水.\n".encode()
    )
    text = load(path)
    assert "星期六 picnic" in text
    assert "Bring the red blanket and 两瓶水." in text
    assert "From: Ann" in text


def test_epub_chapters_are_pages(tmp_path: Path) -> None:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("nook-test")
    book.set_title("Test book")
    book.set_language("en")
    chapters = []
    for number, body in enumerate(["The lighthouse keeper was called Morwenna.", "第二章：灯塔在海边。"], start=1):
        chapter = epub.EpubHtml(title=f"c{number}", file_name=f"c{number}.xhtml", lang="en")
        chapter.content = f"<html><body><h1>Chapter {number}</h1><p>{body}</p></body></html>"
        book.add_item(chapter)
        chapters.append(chapter)
    book.toc = chapters
    book.spine = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    path = tmp_path / "book.epub"
    epub.write_epub(str(path), book)
    pages = load_file(path, path.read_bytes())
    texts = [p.text for p in pages]
    assert any("Morwenna" in t for t in texts)
    assert any("灯塔在海边" in t for t in texts)
    assert all(p.page is not None for p in pages)


def test_corrupt_epub(tmp_path: Path) -> None:
    path = tmp_path / "bad.epub"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/epub+zip")
    with pytest.raises(DocumentError, match="EPUB"):
        load(path)


def test_decode_text_rejects_binary() -> None:
    with pytest.raises(ValueError):
        decode_text(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))


def test_a_text_file_mixing_utf8_and_gbk_lines_is_decoded_line_by_line() -> None:
    data = "Notes in UTF-8, café.\n".encode() + CHINESE.encode("gbk") + "\n结束。\n".encode()
    text, encoding = decode_text(data)
    assert text == "Notes in UTF-8, café.\n" + CHINESE + "\n结束。\n" and encoding == "mixed"


def test_utf16_cut_mid_character_loses_only_that_character() -> None:
    assert decode_text(CHINESE.encode("utf-16")[:-1])[0] == CHINESE[:-1]


def test_binary_after_a_utf16_bom_is_not_text() -> None:
    with pytest.raises(ValueError, match="not text"):
        decode_text(b"\xff\xfe" + bytes(range(256)) * 8)


def test_html_with_only_scripts_has_no_text_to_index(tmp_path: Path) -> None:
    path = tmp_path / "app.html"
    path.write_bytes(b"<html><head><script>var a = 'words';</script></head><body><script>go()</script></body></html>")
    with pytest.raises(DocumentError, match="no text"):
        load(path)


def test_binary_named_eml_is_a_document_error(tmp_path: Path) -> None:
    path = tmp_path / "mail.eml"
    path.write_bytes(bytes(range(256)) * 12)
    with pytest.raises(DocumentError, match="not text"):
        load(path)
