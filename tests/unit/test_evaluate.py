"""Retrieval evaluation: passage matching, metrics, set loading, and whole runs on real Chroma with a fake embedder."""

import json
import math
import random
from pathlib import Path

import pytest

from ingest.pipeline import IngestPipeline
from rag.config import Settings
from rag.evaluate import (
    EvalReport,
    EvalSetError,
    Evaluator,
    PassageFinder,
    language_group,
    language_of,
    load_eval_set,
    load_last_report,
    ndcg,
    save_report,
    shares_passage,
)
from rag.retrieval import Searcher
from rag.service import NookService
from tests.fakes import HashEmbedder


def test_shares_passage_needs_sixty_characters_or_the_whole_short_answer() -> None:
    answer = "The studio cat is called Pumice and sleeps on the warm kiln lid every single afternoon."
    assert shares_passage("Notes.  The studio cat is called Pumice and sleeps on the warm kiln lid. Bye", answer)
    assert not shares_passage("The studio cat is called Pumice.", answer)  # 32 shared characters only
    assert shares_passage("we met. The studio cat is called Pumice. It", "The studio cat is called Pumice.")
    assert not shares_passage("", answer)
    assert shares_passage("药箱放在卫生间洗手台下面的白色塑料箱里", "卫生间洗手台下面")


def test_passage_finder_agrees_with_the_exhaustive_comparison() -> None:
    rng = random.Random(3)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 60))) for _ in range(300)]
    for _ in range(40):
        source = rng.choice(texts)
        start = rng.randint(0, max(len(source) - 20, 0))
        answer = source[start : start + rng.randint(10, 120)] + " " + " ".join(rng.choice(words) for _ in range(8))
        expected = [i for i, t in enumerate(texts) if shares_passage(t, answer)]
        assert PassageFinder(texts).matches(answer) == expected


@pytest.mark.parametrize(
    ("text", "lang"),
    [("What is a lambda?", "en"), ("什么是 lambda 函数？", "zh"), ("布洛芬", "zh"), ("Use 布 here please", "en")],
)
def test_language_of(text: str, lang: str) -> None:
    assert language_of(text) == lang


def test_language_group() -> None:
    assert language_group("zh", "en") == "zh->en"
    assert language_group("en", "en") == "en"


def test_ndcg_by_hand() -> None:
    # Relevant at ranks 1 and 3 (grade 1 each): DCG = 1 + 1/log2(4) = 1.5; ideal = 1 + 1/log2(3).
    assert ndcg(["a", "x", "b"], {"a": 1, "b": 1}) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert ndcg(["x", "y"], {"a": 1}) == 0.0
    assert ndcg(["a"], {"a": 2}) == pytest.approx(1.0)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_pairs_set_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q1", "answer": "a1"}\n{not json\n', encoding="utf-8")
    with pytest.raises(EvalSetError, match=r"bad.jsonl:2: not JSON"):
        load_eval_set(bad)
    with pytest.raises(EvalSetError, match=r":1: needs an \"answer\""):
        load_eval_set(_write(tmp_path / "noanswer.jsonl", [{"question": "why?"}]))
    with pytest.raises(EvalSetError, match="no question set"):
        load_eval_set(tmp_path / "missing.jsonl")
    with pytest.raises(EvalSetError, match="holds no questions"):
        load_eval_set(_write(tmp_path / "empty.jsonl", []))


def _beir(folder: Path, corpus: dict[str, str], queries: dict[str, str], qrels: list[tuple[str, str, int]]) -> Path:
    (folder / "qrels").mkdir(parents=True)
    _write(folder / "corpus.jsonl", [{"_id": i, "title": "", "text": t} for i, t in corpus.items()])
    _write(folder / "queries.jsonl", [{"_id": i, "text": t} for i, t in queries.items()])
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q, d, g in qrels]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_beir_set_loading(tmp_path: Path) -> None:
    folder = _beir(
        tmp_path / "set",
        {"d1": "kettle descaling with vinegar", "d2": "布洛芬的用法"},
        {"q1": "how to descale a kettle", "q2": "布洛芬怎么吃", "q3": "unjudged question"},
        [("q1", "d1", 1), ("q2", "d2", 2), ("q2", "d1", 0), ("q1", "nope", 1)],
    )
    loaded = load_eval_set(folder)
    assert loaded.kind == "beir"
    assert [(q.id, q.relevant, q.lang) for q in loaded.questions] == [("q1", {"d1": 1}, "en"), ("q2", {"d2": 2}, "zh")]
    (folder / "queries.jsonl").unlink()
    with pytest.raises(EvalSetError, match="queries.jsonl is missing"):
        load_eval_set(folder)


NOTES = {
    "kitchen.md": "# Kitchen\n\nThe kettle needs descaling every month with white vinegar and a rinse of clean "
    "water afterwards, otherwise the limescale flakes float in the tea.",
    "bike.md": "# Bike\n\nThe chain was replaced in April with a KMC X9 chain shortened to one hundred and sixteen "
    "links, and the old chain measured three quarters of a percent of wear.",
    "药箱.md": "# 药箱\n\n布洛芬缓释胶囊一盒二十粒，有效期到2026年3月。"
    "头疼、牙疼、发烧时吃，一次一粒，一天不超过两次。",
}


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    for name, text in NOTES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_pairs_run_scores_hits_misses_languages_and_skips(settings: Settings, notes: Path, tmp_path: Path) -> None:
    embedder = HashEmbedder()
    IngestPipeline(settings, embedder).sync([notes])
    questions = _write(
        tmp_path / "q.jsonl",
        [
            # Shares its words with the kitchen note: found at rank 1.
            {"question": "kettle descaling white vinegar", "answer": NOTES["kitchen.md"][11:90], "tag": "lexical"},
            # Chinese over the Chinese note.
            {"question": "布洛芬缓释胶囊一次吃几粒", "answer": "头疼、牙疼、发烧时吃，一次一粒，一天不超过两次。"},
            # Its answer is in no note: skipped, not scored.
            {"question": "where is the passport?", "answer": "The passport is in the blue folder in the desk drawer."},
        ],
    )
    report = Evaluator(Searcher(settings, embedder), k=1).run(load_eval_set(questions), settings)
    assert report.overall.questions == 2
    assert [s[0] for s in report.skipped] == ["where is the passport?"]
    assert report.overall.chunk_hit_at_k == 1.0
    assert report.overall.doc_hit_at_k == 1.0 and report.overall.mrr == 1.0
    assert set(report.by_language) == {"en", "zh"}
    assert report.by_tag["lexical"].questions == 1
    by_question = {r.question: r for r in report.results}
    assert by_question["kettle descaling white vinegar"].top_source.endswith("kitchen.md")


def test_a_wrong_ranking_scores_zero(settings: Settings, notes: Path, tmp_path: Path) -> None:
    embedder = HashEmbedder()
    IngestPipeline(settings, embedder).sync([notes])
    # The question's words all point at the bike note, the answer is in the kitchen note.
    asked = [{"question": "chain links wear KMC", "answer": NOTES["kitchen.md"][11:90]}]
    questions = _write(tmp_path / "q.jsonl", asked)
    report = Evaluator(Searcher(settings, embedder), k=1).run(load_eval_set(questions), settings)
    assert report.overall.chunk_hit_at_k == 0.0
    assert report.overall.doc_hit_at_k == 0.0
    rank = report.results[0].doc_rank
    assert rank is not None and rank > 1  # the kitchen note comes after the bike note
    assert report.overall.mrr == pytest.approx(1 / rank)


def test_a_set_whose_answers_are_all_missing_is_an_error(settings: Settings, notes: Path, tmp_path: Path) -> None:
    embedder = HashEmbedder()
    IngestPipeline(settings, embedder).sync([notes])
    questions = _write(tmp_path / "q.jsonl", [{"question": "q?", "answer": "nothing like this is in the notes at all"}])
    with pytest.raises(EvalSetError, match="none of the 1 answers"):
        Evaluator(Searcher(settings, embedder), k=5).run(load_eval_set(questions), settings)


def test_service_indexes_a_beir_corpus_apart_and_keeps_the_last_report(settings: Settings, tmp_path: Path) -> None:
    folder = _beir(
        tmp_path / "beir",
        {
            "kettle": "The kettle needs descaling every month with white vinegar.",
            "bike": "The bike chain was replaced with a KMC X9 chain of 116 links.",
            "tax": "The council tax is paid by direct debit on the first of the month.",
        },
        {"q1": "kettle descaling vinegar", "q2": "bike chain links", "q3": "council tax debit"},
        [("q1", "kettle", 1), ("q2", "bike", 1), ("q3", "tax", 2), ("q3", "kettle", 1)],
    )
    service = NookService(settings, embedder=HashEmbedder())
    stages: list[str] = []
    report = service.evaluate(folder, k=1, on_progress=lambda stage, done, total: stages.append(stage))
    assert stages[0] == "index" and stages[-1] == "questions"
    assert report.kind == "beir" and report.overall.questions == 3
    assert report.overall.doc_hit_at_k == 1.0
    assert report.overall.chunk_hit_at_k is None  # no answer passages in a BEIR set
    assert report.results[2].ndcg < 1.0  # q3's second relevant document (kettle) is not ranked second
    # The user's own collection was not touched: it is still empty.
    assert service.stats().chunks == 0
    saved = load_last_report(settings)
    assert saved is not None and saved.to_json() == report.to_json()
    assert service.last_eval_report().overall == report.overall


def test_saved_report_round_trips(settings: Settings, notes: Path, tmp_path: Path) -> None:
    embedder = HashEmbedder()
    IngestPipeline(settings, embedder).sync([notes])
    questions = _write(tmp_path / "q.jsonl", [{"question": "kettle vinegar", "answer": NOTES["kitchen.md"][11:90]}])
    report = Evaluator(Searcher(settings, embedder), k=3).run(load_eval_set(questions), settings)
    save_report(settings, report)
    again = load_last_report(settings)
    assert isinstance(again, EvalReport)
    assert again == report
    assert "chunk hit@3" in again.table().splitlines()[0]
