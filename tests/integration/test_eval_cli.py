"""`python -m rag eval` end to end: the bundled sample questions against the sample notes, real model and Chroma."""

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.test_rag_cli import run_rag

pytestmark = pytest.mark.slow

QUESTIONS = ROOT / "data" / "sample-questions.jsonl"


def test_eval_reports_by_language_and_keeps_the_report(indexed: Path) -> None:
    result = run_rag("eval", str(QUESTIONS), "--json", "-k", "5", data_dir=indexed)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    asked = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert report["overall"]["questions"] + len(report["skipped"]) == len(asked)
    assert not report["skipped"], report["skipped"]  # every sample answer is in the sample notes
    # English, Chinese, and questions in one language over notes in the other are each scored on their own.
    assert {"en", "zh", "zh->en", "en->zh"} <= set(report["by_language"])
    assert {"lexical", "paraphrase", "cross"} <= set(report["by_tag"])
    # The default settings find the English and Chinese answers of the bundled notes in the top 5 chunks, and the
    # English answers to Chinese questions (the vectors alone found one of these five; the dictionary-translated
    # keywords find the rest).
    assert report["k"] == 5
    assert report["by_language"]["en"]["chunk_hit_at_k"] >= 0.9
    assert report["by_language"]["zh"]["chunk_hit_at_k"] >= 0.8
    assert report["by_language"]["zh->en"]["chunk_hit_at_k"] >= 0.8
    # English questions over Chinese notes: the vectors alone found two of these five, the translated keywords three.
    assert report["by_language"]["en->zh"]["chunk_hit_at_k"] >= 0.6
    assert report["by_language"]["en"]["doc_hit_at_k"] >= 0.9
    saved = json.loads((indexed / "eval" / "last-report.json").read_text(encoding="utf-8"))
    assert saved["overall"] == report["overall"]


def test_eval_table_and_a_bad_set(indexed: Path, tmp_path: Path) -> None:
    table = run_rag("eval", str(QUESTIONS), "-k", "3", data_dir=indexed)
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[1]
    assert "chunk hit@3" in header and "nDCG@10" in header
    assert any(line.startswith("lang zh->en") for line in table.stdout.splitlines())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "where?"}\n', encoding="utf-8")
    result = run_rag("eval", str(bad), data_dir=indexed)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and "bad.jsonl:1" in result.stderr
    assert "Traceback" not in result.stderr
