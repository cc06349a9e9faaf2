"""Hybrid retrieval logic on the real embedded Chroma with a fake embedder."""

from pathlib import Path

import numpy as np
import pytest

from ingest.pipeline import IngestPipeline
from rag.config import Settings
from rag.retrieval import (
    KEYWORD_WEIGHT,
    RRF_K,
    EmptyIndexError,
    KeywordIndex,
    Searcher,
    SearchFilters,
    dates_in_question,
    keyword_tokens,
    reciprocal_rank_fusion,
)
from tests.fakes import HashEmbedder


@pytest.fixture
def indexed(settings: Settings, samples_copy: Path) -> tuple[Searcher, Path]:
    embedder = HashEmbedder()
    IngestPipeline(settings, embedder).sync([samples_copy])
    return Searcher(settings, embedder), samples_copy


def test_keyword_tokens_english_and_chinese() -> None:
    assert keyword_tokens("What is the G1372 train's number?") == ["g1372", "train's", "number"]
    assert keyword_tokens("布洛芬") == ["布", "洛", "芬", "布洛", "洛芬"]
    assert keyword_tokens("the a of") == []


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What did I write in March 2024?", (20240301, 20240331)),
        ("notes from feb. 2023", (20230201, 20230228)),
        ("what happened on 2024-03-17", (20240317, 20240317)),
        ("2024-02 summary", (20240201, 20240229)),
        ("我2024年5月写了什么？", (20240501, 20240531)),
        ("2024年3月17日做了什么", (20240317, 20240317)),
        ("How much is the rent?", None),
        ("in 2024 I moved", None),  # a year alone is too coarse to filter by
    ],
)
def test_dates_in_question(question: str, expected: tuple[int, int] | None) -> None:
    assert dates_in_question(question) == expected


def test_keyword_index_scores_and_masks() -> None:
    index = KeywordIndex(
        ["a", "b", "c"],
        ["the sourdough starter is called Bubbles", "布洛芬缓释胶囊", "bubbles in the bath"],
        [
            {"folder": "/n/recipes", "date": 20240101},
            {"folder": "/n/health", "date": 20240301},
            {"folder": "/n", "date": 1},
        ],
    )
    top = index.search("starter bubbles", 3, None)
    assert [index.ids[i] for i, _ in top] == ["a", "c"]
    assert [index.ids[i] for i, _ in index.search("布洛芬", 3, None)] == ["b"]
    mask = index.mask(SearchFilters(folders=("/n/recipes",)))
    assert mask is not None and mask.tolist() == [1.0, 0.0, 0.0]
    assert [index.ids[i] for i, _ in index.search("bubbles", 3, mask)] == ["a"]
    assert index.mask(SearchFilters(date_from=20240201)).tolist() == [0.0, 1.0, 0.0]
    assert index.mask(SearchFilters()) is None
    assert index.search("zzz unknownword", 3, None) == []


def test_reciprocal_rank_fusion() -> None:
    fused = reciprocal_rank_fusion({"a": 0, "b": 1, "c": 2}, {"c": 0, "d": 1})
    assert list(fused) == ["c", "a", "b", "d"]  # in both lists beats first in one
    assert fused["c"] == pytest.approx(1 / (RRF_K + 3) + 1 / (RRF_K + 1))


def test_keyword_only_best_hit_of_an_english_question_is_seated_in_the_top_5() -> None:
    """Exact words (a train number, an error code) may be found by keywords alone: fusion keeps that hit."""
    vectors = {f"v{rank}": rank for rank in range(20)}
    fused = reciprocal_rank_fusion(vectors, {"only-keywords": 0}, weights=(1.0, KEYWORD_WEIGHT["en"]))
    assert "only-keywords" in list(fused)[:5]
    # ...while agreement lower down does not outrank the vectors' best: rank 0 beats rank 5 of both lists.
    fused = reciprocal_rank_fusion(vectors, {"v5": 0, "v0": 7}, weights=(1.0, KEYWORD_WEIGHT["en"]))
    assert list(fused)[0] == "v0"


def test_search_brings_keyword_only_hits_in(indexed: tuple[Searcher, Path]) -> None:
    searcher, notes = indexed
    train_note = str(notes / "diary" / "2024-05-03.md")
    with_keywords = searcher.search("G1372", k=5)
    assert train_note in [h.source for h in with_keywords.hits]
    assert all(-1.0 <= h.score <= 1.0 for h in with_keywords.hits)
    assert [h.fused for h in with_keywords.hits] == sorted((h.fused for h in with_keywords.hits), reverse=True)
    # The chunk with the train number is the keyword search's best hit, whatever the vectors say.
    best_keyword = [h for h in with_keywords.hits if "G1372" in h.text]
    assert best_keyword and best_keyword[0].fused >= KEYWORD_WEIGHT["en"] / (RRF_K + 1)


def test_folder_filter(indexed: tuple[Searcher, Path]) -> None:
    searcher, notes = indexed
    result = searcher.search("notes", k=10, filters=SearchFilters(folders=(str(notes / "diary"),)))
    assert result.hits and all(h.metadata["folder"] == str(notes / "diary") for h in result.hits)
    nothing = searcher.search("notes", k=10, filters=SearchFilters(folders=("/no/such/folder",)))
    assert nothing.hits == [] and not nothing.found


def test_date_in_question_narrows_to_that_month(indexed: tuple[Searcher, Path]) -> None:
    searcher, notes = indexed
    result = searcher.search("What did I write in March 2024?", k=5)
    assert result.filters.date_from == 20240301 and result.found
    assert {Path(h.source).name for h in result.hits} <= {"2024-03-04.md", "2024-03-17.md", "2024-03-26.md"}
    # A month no document is dated in does not hide everything.
    result = searcher.search("What did I write in March 1999?", k=5)
    assert result.filters.date_from is None and result.hits


def test_relevance_floor_marks_not_found(settings: Settings, samples_copy: Path) -> None:
    embedder = HashEmbedder()
    IngestPipeline(settings, embedder).sync([samples_copy])
    strict = Searcher(settings.model_copy(update={"relevance_floor": 0.99}), embedder)
    lenient = Searcher(settings.model_copy(update={"relevance_floor": -1.0}), embedder)
    assert not strict.search("quantum chromodynamics lattice", k=3).found
    assert lenient.search("quantum chromodynamics lattice", k=3).found


def test_a_pair_of_models_has_a_floor_for_questions_its_first_asks_alone(settings: Settings, tmp_path: Path) -> None:
    """The USE + MiniLM pair scores an English question on one scale, a question USE asks alone on another."""
    from dataclasses import replace

    from rag.embeddings import get_spec

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "kettle.md").write_text("The kettle needs descaling every month.\n", encoding="utf-8")
    (notes / "bike.md").write_text("The bike chain was replaced in April.\n", encoding="utf-8")
    embedder = HashEmbedder()
    IngestPipeline(settings, embedder).sync([notes])
    embedder.spec = replace(get_spec("multilingual-use-v3+minilm"), relevance_floor=0.99, first_only_floor=-1.0)
    searcher = Searcher(settings, embedder)
    assert (searcher.relevance_floor(), searcher.relevance_floor(first_model_only=True)) == (0.99, -1.0)
    assert not searcher.search("quantum chromodynamics lattice", k=3).found  # English: both models ask
    assert searcher.search("量子色动力学", k=3).found  # Chinese: USE alone asks
    # A floor set in the settings is one floor for every question.
    fixed = Searcher(settings.model_copy(update={"relevance_floor": 0.5}), embedder)
    assert fixed.relevance_floor() == fixed.relevance_floor(first_model_only=True) == 0.5


def test_pair_floors_are_its_parts_floors_on_its_scales() -> None:
    """English questions score the mean of USE's and MiniLM's cosines; USE alone scores its cosine / sqrt(2)."""
    from rag.embeddings import get_spec

    pair = get_spec("multilingual-use-v3+minilm")
    use, minilm = (get_spec(name) for name in pair.parts)
    assert pair.relevance_floor == pytest.approx((use.relevance_floor + minilm.relevance_floor) / 2, abs=1e-3)
    assert pair.first_only_floor == pytest.approx(use.relevance_floor / 2**0.5, abs=1e-3)
    assert pair.dim == use.dim + minilm.dim


def test_keyword_index_follows_new_ingests(indexed: tuple[Searcher, Path], settings: Settings) -> None:
    searcher, notes = indexed
    assert not any("Zanzibar" in h.text for h in searcher.search("Zanzibar", k=3).hits)
    (notes / "notes" / "trip.md").write_text("# Trip\n\nWe are going to Zanzibar in July.\n", encoding="utf-8")
    IngestPipeline(settings, searcher.embedder).sync([notes])
    assert "Zanzibar" in searcher.search("Zanzibar", k=3).hits[0].text


def test_empty_index_is_a_user_error(settings: Settings) -> None:
    with pytest.raises(EmptyIndexError, match="python -m ingest"):
        Searcher(settings, HashEmbedder()).search("anything")


def test_retriever_is_a_langchain_retriever(indexed: tuple[Searcher, Path]) -> None:
    from rag.retriever import NookRetriever

    searcher, notes = indexed
    retriever = NookRetriever(searcher=searcher, k=5)
    docs = retriever.invoke("G1372")
    assert len(docs) == 5 and str(notes / "diary" / "2024-05-03.md") in [d.metadata["source"] for d in docs]
    assert len(retriever.invoke("G1372", k=2)) == 2
    assert np.isfinite(docs[0].metadata["score"])


def test_weighted_fusion_halves_a_ranking() -> None:
    fused = reciprocal_rank_fusion({"a": 0, "b": 1}, {"b": 0, "c": 1}, weights=(1.0, 0.5))
    assert fused["a"] == pytest.approx(1 / (RRF_K + 1))
    assert fused["b"] == pytest.approx(1 / (RRF_K + 2) + 0.5 / (RRF_K + 1))
    assert fused["c"] == pytest.approx(0.5 / (RRF_K + 2))
    assert list(fused) == ["b", "a", "c"]


def test_keyword_weight_drops_when_cross_language_vectors_point_to_another_language() -> None:
    from rag.retrieval import CROSS_LANGUAGE_KEYWORD_WEIGHT, keyword_weight

    english, chinese = KEYWORD_WEIGHT["en"], KEYWORD_WEIGHT["zh"]
    assert english < chinese == 1.0  # keywords count less for English questions, with any model
    # A Chinese question whose best passages are English: keyword matches (Chinese only) are accidents.
    assert keyword_weight("陶艺课的老师叫什么名字？", ["en", "en", "zh"], True) == CROSS_LANGUAGE_KEYWORD_WEIGHT
    assert keyword_weight("陶艺课的老师叫什么名字？", ["zh", "zh", "en"], True) == 1.0
    assert keyword_weight("What is the pottery teacher called?", ["en", "zh", "en"], True) == english
    # An English question keeps its weight when the vectors point to Chinese notes: its matches are names and codes.
    assert keyword_weight("Where is Horfield Sungold planted?", ["zh", "zh", "en"], True) == english
    # An English-only model says nothing about Chinese questions: keywords keep their full weight.
    assert keyword_weight("陶艺课的老师叫什么名字？", ["en", "en", "en"], False) == 1.0
    assert keyword_weight("What did the plumber say about the boiler?", [], True) == english
    assert keyword_weight("What did the plumber say about the boiler?", [], False) == english


def test_a_look_up_of_one_or_two_words_gives_keywords_their_full_weight() -> None:
    """A name the vectors do not know gets random neighbours: a look-up of it trusts the words."""
    from rag.retrieval import LOOK_UP_WORDS, keyword_tokens, keyword_weight

    assert KEYWORD_WEIGHT["en"] < 1.0
    for question in ("bomlynx", "Horfield Sungold", "What is G1372?"):
        assert len(keyword_tokens(question)) <= LOOK_UP_WORDS
        assert keyword_weight(question, ["zh", "en", "en"], True) == 1.0
        assert keyword_weight(question, [], False) == 1.0
    # With one keyword weighed at 0.7, a note holding the name that the vectors list 15th tied with their first.
    assert reciprocal_rank_fusion({"guess": 0, "note": 14}, {"note": 0}, weights=(1.0, 1.0))["note"] > 1 / (RRF_K + 1)
