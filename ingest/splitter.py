"""Split page text into chunks sized in embedding-model tokens, at headings and sentence ends, English or Chinese."""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass

from langchain_text_splitters import RecursiveCharacterTextSplitter

# Tried in order: a piece still too long is split again with the next separator.
# Zero-width look-behinds keep sentence punctuation with the sentence it ends.
SEPARATORS: list[str] = [
    r"\n(?=#{1,6} )",  # before a Markdown heading
    r"\n[ \t]*\n",  # between paragraphs
    r"\n",  # between lines
    r"(?<=[。！？；…])",  # after a Chinese sentence
    r"(?<=[.!?;])\s+",  # after an English sentence
    r"(?<=[，、：])",  # after a Chinese clause
    r"(?<=[,:])\s+",  # after an English clause
    r"\s+",  # between words
    "",  # between characters, as a last resort
]

_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
# reST: a title line underlined (and maybe overlined) with one punctuation character. The title's leading blanks are
# [^\S\n]*, disjoint from the \S after them: [^\n]*\S backtracked over every line (14x slower on the library docs).
_RST_HEADING = re.compile(
    r"^(?:([=\-~^\"'`#*+<>:._])\1{2,}\n)?([^\S\n]*\S[^\n]*)\n([=\-~^\"'`#*+<>:._])\3{2,}[ \t]*$", re.M
)


@dataclass(frozen=True)
class TextChunk:
    """A piece of a page: its text, where it starts in the page, and the headings above it."""

    text: str
    start: int
    heading: str


class HeadingIndex:
    """Answers "which headings are above this offset?" for one page of text."""

    def __init__(self, text: str, style: str) -> None:
        self._offsets: list[int] = []
        self._paths: list[str] = []
        stack: list[tuple[int, str]] = []
        for offset, level, title in _headings(text, style):
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, title))
            self._offsets.append(offset)
            self._paths.append(" > ".join(t for _, t in stack))

    def path_at(self, offset: int) -> str:
        """The heading path in force at this offset ("" before the first heading)."""
        i = bisect.bisect_right(self._offsets, offset) - 1
        return self._paths[i] if i >= 0 else ""


def _headings(text: str, style: str) -> list[tuple[int, int, str]]:
    if style == "markdown":
        return [(m.start(), len(m.group(1)), m.group(2).strip()) for m in _MD_HEADING.finditer(text)]
    if style == "rst":
        levels: dict[str, int] = {}
        found = []
        for m in _RST_HEADING.finditer(text):
            title = m.group(2).strip()
            if len(m.group(0).splitlines()[-1].strip()) < len(title) // 2:
                continue  # an underline much shorter than the title is not a heading
            key = (m.group(1) or "") + m.group(3)
            level = levels.setdefault(key, len(levels) + 1)
            found.append((m.start(), level, title))
        return found
    return []


class ChunkSplitter:
    """Recursive splitting with language-aware separators; sizes counted by a token-length function."""

    def __init__(self, chunk_size: int, chunk_overlap: int, length_function: Callable[[str], int] = len) -> None:
        self._splitter = RecursiveCharacterTextSplitter(
            separators=SEPARATORS,
            is_separator_regex=True,
            keep_separator=True,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            length_function=length_function,
            add_start_index=False,
            strip_whitespace=True,
        )

    def split(self, text: str, heading_style: str = "") -> list[TextChunk]:
        """Split one page; each chunk knows its start offset in the page and its heading path."""
        headings = HeadingIndex(text, heading_style)
        chunks: list[TextChunk] = []
        cursor = 0
        for piece in self._splitter.split_text(text):
            # Chunks come in order and overlap; search from just after the previous start.
            start = text.find(piece, cursor)
            if start < 0:  # not expected: pieces are substrings; fall back to a full search
                start = max(text.find(piece), 0)
            cursor = start + 1
            chunks.append(TextChunk(text=piece, start=start, heading=headings.path_at(start)))
        return chunks
