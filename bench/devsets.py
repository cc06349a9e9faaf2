"""Build the retrieval development sets from real documents no one here wrote, into bench/.cache/devsets.

Run: .venv/bin/python bench/devsets.py   (downloads Debian's python3.11-doc, sqlite3-doc and maint-guide-zh-cn once)

Writes a notes folder to index, with the question headings of the two FAQs removed from the text:
    notes/python-faq/       Python FAQ (English)
    notes/sqlite-faq/       SQLite FAQ, one answer per file, plus 20 SQL reference pages as distractors (English)
    notes/maint-guide-zh/   Debian New Maintainers' Guide in Chinese
and question sets for `python -m rag eval` (JSONL, {"question", "answer", "source", "tag"}):
    en.jsonl          the FAQ headings, as asked (English over English)
    zh.jsonl          questions written about the Chinese guide (Chinese over Chinese; some tagged paraphrase)
    zh-en.jsonl       the Python FAQ questions in Chinese (Chinese over English)
    paraphrase.jsonl  the Python FAQ questions re-worded to share no content words with the answer
    en-zh.jsonl       the Chinese set's questions in English (English over Chinese; no goal, measured)
The questions written by hand live in bench/questions/; the documents are never committed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.corpus import CACHE, FaqQuestion, faq_set  # noqa: E402
from bench.corpus_sqlite import sqlite_faq_set  # noqa: E402
from bench.corpus_zh import maint_guide_corpus  # noqa: E402

DEVSETS = CACHE / "devsets"
QUESTIONS = Path(__file__).resolve().parent / "questions"
SETS = ("en", "zh", "zh-en", "paraphrase", "en-zh")


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _read_jsonl(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build(target: Path = DEVSETS) -> Path:
    """Build (or rebuild) the notes folder and the question sets; returns the folder holding them."""
    notes = target / "notes"
    shutil.rmtree(target, ignore_errors=True)
    notes.mkdir(parents=True)

    py_folder, py_questions = faq_set()
    sq_folder, sq_questions = sqlite_faq_set()
    zh_folder = maint_guide_corpus()
    for name, folder in (("python-faq", py_folder), ("sqlite-faq", sq_folder), ("maint-guide-zh", zh_folder)):
        shutil.copytree(folder, notes / name)

    english = [{"question": q.question, "answer": q.answer, "source": f"python-faq/{q.file}"} for q in py_questions]
    english += [{"question": q.question, "answer": q.answer, "source": f"sqlite-faq/{q.file}"} for q in sq_questions]
    _write_jsonl(target / "en.jsonl", english)

    chinese = [
        {"question": row["question"], "answer": row["answer"], "source": f"maint-guide-zh/{row['source']}",
         **({"tag": row["tag"]} if row.get("tag") else {})}
        for row in _read_jsonl(QUESTIONS / "zh-maint-guide.jsonl")
    ]  # fmt: skip
    _write_jsonl(target / "zh.jsonl", chinese)
    english_over_chinese = [
        {"question": row["en"], "answer": row["answer"], "source": f"maint-guide-zh/{row['source']}",
         **({"tag": row["tag"]} if row.get("tag") else {})}
        for row in _read_jsonl(QUESTIONS / "zh-maint-guide.jsonl") if row.get("en")
    ]  # fmt: skip
    _write_jsonl(target / "en-zh.jsonl", english_over_chinese)

    by_heading: dict[str, list[FaqQuestion]] = {}
    for q in py_questions:  # "What is Python?" is asked twice, in two files: pair them in order
        by_heading.setdefault(q.question, []).append(q)
    cross, paraphrased = [], []
    for row in _read_jsonl(QUESTIONS / "python-faq-variants.jsonl"):
        same = by_heading.get(row["en_question"])
        if not same:  # the FAQ changed under the written question: leave it out rather than guess
            continue
        q = same.pop(0)
        source = f"python-faq/{q.file}"
        cross.append({"question": row["zh"], "answer": q.answer, "source": source})
        paraphrased.append({"question": row["paraphrase"], "answer": q.answer, "source": source, "tag": "paraphrase"})
    _write_jsonl(target / "zh-en.jsonl", cross)
    _write_jsonl(target / "paraphrase.jsonl", paraphrased)
    return target


def main() -> None:
    target = build()
    for name in SETS:
        count = len((target / f"{name}.jsonl").read_text(encoding="utf-8").splitlines())
        print(f"{target / name}.jsonl: {count} questions")
    files = [p for p in (target / "notes").rglob("*") if p.is_file()]
    chars = sum(len(p.read_text(encoding="utf-8")) for p in files)
    print(f"{target / 'notes'}: {len(files)} files, {chars:,} characters")


if __name__ == "__main__":
    main()
