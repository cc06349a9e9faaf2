"""Read one file into text pages: one loader per file type, a registry by extension, text sniffing for the rest."""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rag.errors import DocumentError


@dataclass
class Page:
    """Text of one page (PDF page, EPUB chapter) or of a whole file; headings are Markdown-style lines."""

    text: str
    page: int | None = None  # 1-based where the format has pages
    meta: dict[str, str] = field(default_factory=dict)


Loader = Callable[[Path, bytes], list[Page]]

# ---------------------------------------------------------------- text and encodings

_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Control characters other than tab, newline, carriage return, form feed: their share tells binary from text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# Encodings tried when UTF-8 fails, in an order where the stricter ones go first.
_CJK_CANDIDATES = ("gb18030", "big5", "shift_jis", "euc_kr")


def _looks_like_text(text: str) -> bool:
    if not text:
        return True
    controls = len(_CONTROL.findall(text))
    replacement = text.count("\ufffd")
    return (controls + replacement) / len(text) < 0.01


def _utf16_without_bom(data: bytes) -> str | None:
    """Decode BOM-less UTF-16 when one byte of each pair is mostly zero (ASCII-heavy text)."""
    sample = data[:4096]
    if len(sample) < 4:
        return None
    even_zero = sample[0::2].count(0) / len(sample[0::2])
    odd_zero = sample[1::2].count(0) / len(sample[1::2])
    for codec, ratio in (("utf-16-le", odd_zero), ("utf-16-be", even_zero)):
        if ratio > 0.3:
            try:
                text = data.decode(codec)
            except UnicodeDecodeError:
                continue
            if _looks_like_text(text):
                return text
    return None


def _cjk_score(text: str) -> float:
    """Share of characters that are common CJK ideographs, ASCII or CJK punctuation: high for a right guess."""
    if not text:
        return 0.0
    good = sum(
        1
        for ch in text
        if ch.isascii() or "\u4e00" <= ch <= "\u9fff" or "\u3000" <= ch <= "\u303f" or "\uff00" <= ch <= "\uffef"
    )
    return good / len(text)


def _decode_by_line(data: bytes) -> str | None:
    """Text whose lines were saved in different encodings (UTF-8 appended to a GBK note): each line on its own."""
    lines = []
    for line in data.split(b"\n"):
        guesses: list[tuple[float, str]] = []
        for codec in ("utf-8", *_CJK_CANDIDATES, "cp1252"):
            try:
                text = line.decode(codec)
            except UnicodeDecodeError:
                continue
            if codec == "utf-8":
                guesses = [(2.0, text)]  # valid UTF-8 is never a coincidence
                break
            guesses.append((_cjk_score(text), text))
        if not guesses:
            return None
        lines.append(max(guesses)[1])
    text = "\n".join(lines)
    return text if _looks_like_text(text) else None


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode bytes of unknown encoding to text; returns (text, encoding name).

    UTF-8 and BOM-marked UTF-16 are certain; otherwise charset-normalizer guesses, and for Chinese
    text the strict candidates GB18030 and Big5 are weighed by how plausible the decoded characters are.
    Raises ValueError when the bytes are not text.
    """
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8", errors="replace"), "utf-8-sig"
    if data.startswith(_UTF16_BOMS):
        # A file cut mid-character loses that character, not the whole file.
        text = data[: len(data) // 2 * 2].decode("utf-16", errors="replace")
        if _looks_like_text(text):
            return text, "utf-16"
        raise ValueError("not text (binary data)")
    if b"\x00" in data[:8192]:
        # NUL bytes are valid UTF-8 but never in text: BOM-less UTF-16, or binary.
        utf16 = _utf16_without_bom(data)
        if utf16 is not None:
            return utf16, "utf-16"
        raise ValueError("not text (binary data)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if _looks_like_text(text):
            return text, "utf-8"
        raise ValueError("not text (binary data)")

    candidates: list[tuple[float, str, str]] = []
    for codec in _CJK_CANDIDATES:
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        if _looks_like_text(text):
            candidates.append((_cjk_score(text), codec, text))
    from charset_normalizer import from_bytes

    results = from_bytes(data)
    best = results.best()
    if best is not None:
        # On short Western text the ranking between single-byte code pages is close to a coin toss;
        # Windows-1252 (a superset of Latin-1) is by far the likeliest, so it wins a near tie.
        western = next((m for m in results if m.encoding in ("cp1252", "latin_1")), None)
        if western is not None and western.chaos <= best.chaos + 0.1:
            best = western
    if best is not None and best.encoding:
        text = str(best)
        if _looks_like_text(text):
            # Latin-1 style guesses score low on the CJK scale but are right for European text.
            score = _cjk_score(text) if any(c.startswith(best.encoding[:3]) for c in _CJK_CANDIDATES) else 0.0
            candidates.append((max(score, 0.5 if not candidates else 0.0), best.encoding, text))
    if not candidates:
        mixed = _decode_by_line(data)
        if mixed is not None:
            return mixed, "mixed"
        raise ValueError("not text (binary data or unknown encoding)")
    # A CJK decoding that yields almost only common ideographs beats a single-byte guess.
    candidates.sort(key=lambda c: c[0], reverse=True)
    score, codec, text = candidates[0]
    if score < 0.9 and best is not None and best.encoding:
        return str(best), best.encoding
    return text, codec


def _load_text(path: Path, data: bytes) -> list[Page]:
    try:
        text, encoding = decode_text(data)
    except ValueError as exc:
        raise DocumentError(str(path), str(exc)) from None
    return [Page(text=text.replace("\r\n", "\n").replace("\r", "\n"), meta={"encoding": encoding})]


# ---------------------------------------------------------------- formats with structure


def _load_pdf(path: Path, data: bytes) -> list[Page]:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    # pypdf logs its own warnings about damaged files; we report each file once, in our own words.
    logging.getLogger("pypdf").setLevel(logging.ERROR)

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                reader.decrypt("")  # many "encrypted" PDFs only restrict printing
            except Exception:  # noqa: BLE001 - pypdf raises many kinds here
                raise DocumentError(str(path), "encrypted PDF (password protected)") from None
        pages = []
        for number, page in enumerate(reader.pages, start=1):
            pages.append(Page(text=page.extract_text() or "", page=number))
    except DocumentError:
        raise
    except FileNotDecryptedError:
        raise DocumentError(str(path), "encrypted PDF (password protected)") from None
    except PdfReadError as exc:
        raise DocumentError(str(path), f"corrupt PDF ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - malformed PDFs make pypdf raise arbitrary errors
        raise DocumentError(str(path), f"corrupt PDF ({type(exc).__name__}: {exc})") from None
    if pages and not any(p.text.strip() for p in pages):
        raise DocumentError(str(path), "PDF has no text layer (scanned images need OCR, which Nook does not do)")
    return pages


def _load_docx(path: Path, data: bytes) -> list[Page]:
    import zipfile

    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DocumentError(str(path), f"corrupt DOCX ({type(exc).__name__}: {exc})") from None
    lines: list[str] = []
    for paragraph in document.paragraphs:
        text = paragraph.text.strip()
        if not text:
            continue
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        level = _heading_level(style)
        lines.append(f"{'#' * level} {text}" if level else text)
        lines.append("")
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text.strip() for cell in row.cells))
        lines.append("")
    return [Page(text="\n".join(lines))]


def _heading_level(style: str) -> int:
    if style == "Title":
        return 1
    match = re.fullmatch(r"Heading (\d)", style)
    return min(int(match.group(1)), 6) if match else 0


def html_to_text(markup: str | bytes) -> str:
    """Visible text of an HTML document, headings as Markdown lines, scripts and styles dropped."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    for level in range(1, 7):
        for tag in soup.find_all(f"h{level}"):
            tag.insert_before(f"\n\n{'#' * level} ")
            tag.insert_after("\n\n")
    for tag in soup.find_all(["p", "div", "li", "tr", "br", "section", "article", "pre", "blockquote", "dd", "dt"]):
        tag.insert_after("\n")
    for tag in soup.find_all(["td", "th"]):
        tag.insert_after(" | ")
    text = soup.get_text()
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _load_html(path: Path, data: bytes) -> list[Page]:
    # Let the document's own <meta charset> win; fall back to detection.
    match = re.search(rb"<meta[^>]+charset=[\"']?([A-Za-z0-9_-]+)", data[:4096], re.IGNORECASE)
    markup: str | None = None
    if match:
        try:
            markup = data.decode(match.group(1).decode("ascii"))
        except (LookupError, UnicodeDecodeError):
            markup = None
    if markup is None:
        markup = _load_text(path, data)[0].text
    return [Page(text=html_to_text(markup))]


def _load_csv(path: Path, data: bytes) -> list[Page]:
    text = _load_text(path, data)[0].text
    try:
        dialect = csv.Sniffer().sniff(text[:4096])
    except csv.Error:
        dialect = csv.excel  # type: ignore[assignment]
    rows = list(csv.reader(io.StringIO(text), dialect))
    if not rows:
        return [Page(text="")]
    header, body = rows[0], rows[1:]
    lines = []
    for row in body:
        pairs = [f"{h}: {v}" for h, v in zip(header, row, strict=False) if v.strip()]
        lines.append("; ".join(pairs))
    return [Page(text="\n".join(lines) if body else " | ".join(header))]


def _load_eml(path: Path, data: bytes) -> list[Page]:
    from email import policy
    from email.parser import BytesParser

    try:
        message = BytesParser(policy=policy.default).parsebytes(data)
    except Exception as exc:  # noqa: BLE001 - the email package raises many kinds on broken input
        raise DocumentError(str(path), f"cannot parse e-mail ({exc})") from None
    header = "\n".join(
        f"{name}: {message[name]}" for name in ("Subject", "From", "To", "Date") if message[name] is not None
    )
    body_part = message.get_body(preferencelist=("plain", "html"))  # type: ignore[attr-defined]
    body = ""
    if body_part is not None:
        try:
            content = body_part.get_content()
        except (LookupError, UnicodeDecodeError):
            content = body_part.get_payload(decode=True) or b""
            content = _load_text(path, content)[0].text if isinstance(content, bytes) else str(content)
        body = html_to_text(content) if body_part.get_content_type() == "text/html" else content
    subject = message["Subject"]
    title = f"# {subject}\n\n" if subject else ""
    text = f"{title}{header}\n\n{body}".strip()
    if not _looks_like_text(text):  # the parser accepts any bytes: binary junk would come out as "text"
        raise DocumentError(str(path), "not text (binary data)")
    return [Page(text=text)]


def _load_epub(path: Path, data: bytes) -> list[Page]:
    import tempfile
    import zipfile

    try:
        import ebooklib
        from ebooklib import epub
    except ImportError:  # pragma: no cover - ebooklib is a core dependency
        raise DocumentError(str(path), "EPUB support needs: pip install ebooklib") from None
    with tempfile.NamedTemporaryFile(suffix=".epub") as handle:
        handle.write(data)
        handle.flush()
        try:
            book = epub.read_epub(handle.name, options={"ignore_ncx": True})
        except (zipfile.BadZipFile, KeyError, epub.EpubException, AttributeError) as exc:
            raise DocumentError(str(path), f"corrupt EPUB ({type(exc).__name__}: {exc})") from None
    pages = []
    for number, item in enumerate(book.get_items_of_type(ebooklib.ITEM_DOCUMENT), start=1):
        text = html_to_text(item.get_content())
        if text.strip():
            pages.append(Page(text=text, page=number))
    return pages


LOADERS: dict[str, Loader] = {
    ".txt": _load_text,
    ".text": _load_text,
    ".md": _load_text,
    ".markdown": _load_text,
    ".rst": _load_text,
    ".org": _load_text,
    ".log": _load_text,
    ".pdf": _load_pdf,
    ".docx": _load_docx,
    ".html": _load_html,
    ".htm": _load_html,
    ".xhtml": _load_html,
    ".csv": _load_csv,
    ".tsv": _load_csv,
    ".eml": _load_eml,
    ".epub": _load_epub,
}

# Extensions that are surely not text: skipped without reading the whole file.
BINARY_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .gif .webp .bmp .tiff .ico .heic .mp3 .mp4 .m4a .wav .flac .ogg .mov .avi .mkv "
    ".zip .gz .tgz .bz2 .xz .7z .rar .tar .exe .dll .so .dylib .bin .o .a .class .jar .pyc .whl "
    ".sqlite .sqlite3 .db .gguf .onnx .pt .safetensors .woff .woff2 .ttf .otf .doc .xls .ppt .xlsx .pptx".split()
)

# Markdown-flavoured formats: headings become the chunks' heading path.
HEADING_FORMATS = frozenset({".md", ".markdown", ".docx", ".html", ".htm", ".xhtml", ".eml", ".epub"})


class NotSupported(Exception):
    """The file is of a kind Nook does not read (an image, an archive...); it is skipped, not failed."""


def load_file(path: Path, data: bytes) -> list[Page]:
    """Load a file's bytes with the loader for its extension, or sniff unknown extensions for text.

    Raises DocumentError when a supported file cannot be read, NotSupported for files to skip.
    """
    suffix = path.suffix.lower()
    loader = LOADERS.get(suffix)
    if loader is not None:
        if not data.strip():
            raise DocumentError(str(path), "empty file")
        pages = loader(path, data)
        if not any(page.text.strip() for page in pages):  # e.g. HTML of scripts only: indexing it would hide it
            raise DocumentError(str(path), "no text to index")
        return pages
    if suffix in BINARY_EXTENSIONS:
        raise NotSupported(f"unsupported file type {suffix}")
    if not data.strip():
        raise NotSupported("empty file of unknown type")
    try:
        text, encoding = decode_text(data)
    except ValueError:
        raise NotSupported("not text (binary data)") from None
    return [Page(text=text.replace("\r\n", "\n").replace("\r", "\n"), meta={"encoding": encoding})]
