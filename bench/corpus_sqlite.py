"""A second FAQ set: Debian's sqlite3-doc FAQ split into one text file per answer, plus distractor pages."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

from bench.corpus import CACHE, FaqQuestion

PACKAGE = "sqlite3-doc"

# Elements whose content is never text: code, pictures (the railroad diagrams are inline SVG), the page head.
_SKIP = {"script", "style", "svg", "head", "form", "select", "button", "noscript"}
# Elements that start a new line of text.
_BLOCK = {
    "p", "div", "br", "li", "ul", "ol", "dl", "dt", "dd", "blockquote", "pre", "table", "tr", "td", "th",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "title",
}  # fmt: skip
_QUESTION_ANCHOR = re.compile(r"q(\d+)")
_NUMBER = re.compile(r"^\(\d+\)\s*")


def sqlite_doc_html() -> Path:
    """The folder holding the sqlite3-doc HTML pages (the one with faq.html), downloading the Debian package once."""
    root = CACHE / PACKAGE
    found = sorted(root.rglob("faq.html")) if root.is_dir() else []
    if found:
        return found[0].parent
    CACHE.mkdir(parents=True, exist_ok=True)
    debs = sorted(CACHE.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        try:
            subprocess.run(["apt-get", "download", PACKAGE], cwd=CACHE, check=True, capture_output=True)
        except subprocess.CalledProcessError:  # package lists not fetched yet: update once, then retry
            subprocess.run(["apt-get", "update"], check=True, capture_output=True)
            subprocess.run(["apt-get", "download", PACKAGE], cwd=CACHE, check=True, capture_output=True)
        debs = sorted(CACHE.glob(f"{PACKAGE}_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(root)], check=True)
    return next(root.rglob("faq.html")).parent


class _TextParser(HTMLParser):
    """HTML to plain text: one line per block element, whitespace collapsed, script/style/SVG and site chrome dropped.

    While parsing, the FAQ layout is recognised too: `<a name="qN">`, then the question in `<b>`, then the answer in
    the next top-level `<blockquote>`. Those pieces are gathered in `items` as [number, question, answer] raw text.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self.items: list[list[str]] = []
        self._skip_tag = ""
        self._skip_level = 0
        self._in_title = False
        self._pre = 0
        self._faq_state = ""  # "", "await_question", "question", "await_answer", "answer"
        self._quote_level = 0

    def _emit(self, text: str) -> None:
        self.parts.append(text)
        if self._faq_state == "question":
            self.items[-1][1] += text
        elif self._faq_state == "answer":
            self.items[-1][2] += text

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if self._skip_level:
            self._skip_level += tag == self._skip_tag
            return
        classes = (dict(attrs).get("class") or "").split()
        if tag in _SKIP or (tag == "div" and "nosearch" in classes):  # nosearch: menus, search box, page TOC
            self._skip_tag, self._skip_level = tag, 1
            return
        name = dict(attrs).get("name") or ""
        if tag == "a" and (match := _QUESTION_ANCHOR.fullmatch(name)):
            self.items.append([match.group(1), "", ""])
            self._faq_state = "await_question"
        elif tag == "b" and self._faq_state == "await_question":
            self._faq_state = "question"
        elif tag == "blockquote" and self._faq_state in ("await_answer", "answer"):
            self._faq_state = "answer"
            self._quote_level += 1
        if tag == "pre":
            self._pre += 1
        if tag in _BLOCK:
            self._emit("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK and not self._skip_level:
            self._emit("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if self._skip_level:
            self._skip_level -= tag == self._skip_tag
            return
        if tag in _BLOCK:
            self._emit("\n")
        if tag == "pre" and self._pre:
            self._pre -= 1
        if tag == "b" and self._faq_state == "question":
            self._faq_state = "await_answer"
        elif tag == "blockquote" and self._faq_state == "answer":
            self._quote_level -= 1
            if not self._quote_level:
                self._faq_state = ""

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        if self._skip_level:
            return
        self._emit(data if self._pre else " ".join(data.split("\n")))


def _lines(raw: str) -> str:
    """Collapse whitespace within each line and drop the empty lines."""
    lines = (" ".join(line.split()) for line in raw.split("\n"))
    return "\n".join(line for line in lines if line) + "\n"


def _parse(path: Path) -> _TextParser:
    parser = _TextParser()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    parser.close()
    return parser


def page_text(path: Path) -> str:
    """One sqlite3-doc HTML page as plain text: its <title> on the first line, then the body text."""
    parser = _parse(path)
    title = " ".join("".join(parser.title).split())
    return _lines(title + "\n" + "".join(parser.parts))


def sqlite_faq_set(distractors: int = 20) -> tuple[Path, list[FaqQuestion]]:
    """The SQLite FAQ as one text file per answer (questions removed), plus other doc pages as distractors.

    Every FAQ answer is written to `faq-NN.txt` (NN = the FAQ's own number); the returned questions are those whose
    whitespace-normalised answer has at least 80 characters. The first `distractors` `lang_*.html` pages (sorted by
    name) are written as `lang_*.txt`. The folder is rebuilt from scratch on every call.

    Args:
        distractors: How many `lang_*.html` pages to add as distractor documents.

    Returns:
        The corpus folder and the questions, each with its answer and the name of the file holding it.
    """
    html = sqlite_doc_html()
    target = CACHE / "sqlite-faq-corpus"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    questions: list[FaqQuestion] = []
    for number, question, answer in _parse(html / "faq.html").items:
        text = _lines(answer)
        name = f"faq-{int(number):02d}.txt"
        (target / name).write_text(text, encoding="utf-8")
        normalised = " ".join(text.split())
        if len(normalised) >= 80:
            questions.append(FaqQuestion(_NUMBER.sub("", " ".join(question.split())), normalised, name))
    for path in sorted(html.glob("lang_*.html"))[:distractors]:
        (target / (path.stem + ".txt")).write_text(page_text(path), encoding="utf-8")
    return target, questions
