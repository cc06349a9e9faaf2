"""Real Chinese documents no one here wrote: the Debian New Maintainers' Guide (zh-cn), fetched with apt, as text."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"
PACKAGE = "maint-guide-zh-cn"
HTML_DIR = f"usr/share/doc/{PACKAGE}/html"

_CJK = (
    "\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f"  # radicals, CJK punctuation, kana, bopomofo
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # ideographs
    "\ufe30-\ufe4f\uff00-\uffef"  # vertical and full-width forms
)
# A run of whitespace with a CJK character (ideograph or full-width punctuation) on both sides.
_CJK_GAP = re.compile(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])")
_BLOCKS = frozenset(
    "address article aside blockquote body caption dd div dl dt figcaption figure footer form header hr li main nav ol "
    "p section table tbody tfoot thead tr ul h1 h2 h3 h4 h5 h6".split()
)
_SKIPPED = frozenset({"head", "script", "style", "template", "noscript"})
# DocBook's navigation bars repeat the previous/next chapter titles on every page.
_SKIPPED_CLASSES = frozenset({"navheader", "navfooter"})
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})


def _normalise(text: str) -> str:
    """Drop whitespace between two CJK characters (wrapped source lines) and collapse every other run to one space."""
    return " ".join(_CJK_GAP.sub("", text).split())


class _TextExtractor(HTMLParser):
    """Collects the text of an HTML page as paragraphs: one block element per paragraph, `<pre>` kept verbatim."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self._buffer: list[str] = []
        self._skip: list[str] = []  # the open elements whose content is dropped, outermost first
        self._pre = 0
        self._cells = 0  # table cells seen in the current row

    def _flush(self) -> None:
        text = "".join(self._buffer)
        self._buffer.clear()
        if self._pre:
            text = text.strip("\n").rstrip()
        else:
            text = _normalise(text)
        if text:
            self.blocks.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Open an element: start a new paragraph at block elements, or start skipping unwanted content."""
        if self._skip:
            if tag == self._skip[0] and tag not in _VOID:
                self._skip.append(tag)
            return
        classes = set((dict(attrs).get("class") or "").split())
        if tag in _SKIPPED or classes & _SKIPPED_CLASSES:
            if tag not in _VOID:
                self._skip.append(tag)
            return
        if tag in ("td", "th"):
            if self._cells:
                self._buffer.append(" | ")
            self._cells += 1
        elif tag == "pre":
            self._flush()
            self._pre += 1
        elif tag == "br":
            self._flush()
        elif tag in _BLOCKS:
            if tag == "tr":
                self._cells = 0
            if not self._pre:
                self._flush()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """A self-closing XHTML tag such as `<a id="x"/>` opens and closes at once."""
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        """Close an element: end the paragraph at block elements, or stop skipping."""
        if self._skip:
            if tag == self._skip[0]:
                self._skip.pop()
            return
        if tag == "pre" and self._pre:
            self._flush()
            self._pre -= 1
        elif tag in _BLOCKS and not self._pre:
            self._flush()

    def handle_data(self, data: str) -> None:
        """Text inside the current paragraph."""
        if not self._skip:
            self._buffer.append(data)

    def close(self) -> None:
        """Finish parsing and flush the last paragraph."""
        super().close()
        self._flush()


def html_to_text(html: str) -> str:
    """Plain text of an HTML page: headings and paragraphs as blocks separated by blank lines, no markup."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return "\n\n".join(parser.blocks) + "\n"


def _maint_guide_html() -> Path:
    """The HTML folder of the Debian package, downloading and unpacking the package once."""
    root = CACHE / PACKAGE
    html = root / HTML_DIR
    if html.is_dir():
        return html
    CACHE.mkdir(parents=True, exist_ok=True)
    download = ["apt-get", "download", PACKAGE]
    if subprocess.run(download, cwd=CACHE, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], check=True, capture_output=True)
        subprocess.run(download, cwd=CACHE, check=True, capture_output=True)
    deb = next(CACHE.glob(f"{PACKAGE}_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return html


def maint_guide_corpus() -> Path:
    """A folder of UTF-8 `.txt` files, one per chapter page of the Chinese Debian New Maintainers' Guide.

    The folder is built in a temporary sibling and renamed into place, so if it exists it is complete and is
    returned at once.

    Returns:
        `bench/.cache/maint-guide-zh/`, holding e.g. `start.txt` for `start.zh-cn.html`.
    """
    target = CACHE / "maint-guide-zh"
    if target.is_dir():
        return target
    building = CACHE / "maint-guide-zh.partial"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    for page in sorted(_maint_guide_html().glob("*.html")):
        name = page.name.removesuffix(".html").removesuffix(".zh-cn") + ".txt"
        (building / name).write_text(html_to_text(page.read_text(encoding="utf-8")), encoding="utf-8")
    building.rename(target)
    return target
