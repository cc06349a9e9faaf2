"""Measure retrieval on a question set: hit@k, MRR and nDCG@10 per document, hit@k per chunk, by language.

Two kinds of set:

* BEIR layout, a folder with `corpus.jsonl`, `queries.jsonl` and `qrels/test.tsv`: the corpus is indexed into an
  index of its own under `data_dir/eval/` (with the configured embedding model and chunking, synced so a second run
  reuses it) and scored at document level against the graded judgements.
* A JSONL file of `{"question": ..., "answer": ...}` pairs (optional `source`, `lang`, `tag`), scored against the
  configured collection: a chunk hits when it shares a long enough passage with the answer (the whole answer when it
  is shorter); the relevant documents are those holding such a chunk, or `source` when given.

Groups: by language ("en", "zh", and "zh->en" for a Chinese question over an English answer) and by `tag`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.errors import NookError
from rag.language import text_language

PASSAGE_CHARS = 60  # a chunk hits when it shares this many characters with the answer
NDCG_DEPTH = 10
REPORT_NAME = "last-report.json"



class EvalSetError(NookError):
    """The question set cannot be read; the message says which file and line."""

    exit_code = 2


# ---------------------------------------------------------------- matching answers to chunks


def normalise(text: str) -> str:
    """Whitespace folded to single spaces."""
    return " ".join(text.split())


def shares_passage(chunk: str, answer: str, need: int = PASSAGE_CHARS) -> bool:
    """True when chunk and answer share a passage of `need` characters (or the whole answer, if shorter)."""
    a, b = normalise(chunk), normalise(answer)
    if not a or not b:
        return False
    match = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    return match.size >= min(need, len(b))


class PassageFinder:
    """Finds the chunks that share a passage with an answer, without comparing every chunk in full.

    A passage of `need` characters always contains one of the answer's probes (pieces of `need/3` characters taken
    every `need/6`), so only chunks holding a probe as a plain substring are compared exactly.
    """

    def __init__(self, texts: Sequence[str], need: int = PASSAGE_CHARS) -> None:
        self.texts = [normalise(t) for t in texts]
        self.need = need

    def matches(self, answer: str) -> list[int]:
        """Positions of the texts that share a passage with the answer."""
        b = normalise(answer)
        if not b:
            return []
        need = min(self.need, len(b))
        size = max(need // 3, 1)
        step = max(size // 2, 1)
        probes = {b[i : i + size] for i in range(0, len(b) - size + 1, step)} or {b}
        candidates = [i for i, t in enumerate(self.texts) if any(p in t for p in probes)]
        return [i for i in candidates if shares_passage(self.texts[i], b, self.need)]


def language_of(text: str) -> str:
    """"zh" or "en", by the rule ingest uses to tag chunks (a fair share of CJK ideographs among the letters)."""
    return text_language(text)


def language_group(question_lang: str, text_lang: str) -> str:
    """"en", "zh", or "zh->en" when question and answer are in different languages."""
    return question_lang if question_lang == text_lang else f"{question_lang}->{text_lang}"


# ---------------------------------------------------------------- question sets


@dataclass
class EvalQuestion:
    """One question: what is relevant (document ids with grades) and, for answer pairs, the gold answer."""

    id: str
    question: str
    answer: str | None = None
    relevant: dict[str, int] = field(default_factory=dict)
    lang: str = ""
    tag: str = ""


@dataclass
class EvalSet:
    """Questions, and for a BEIR set the corpus to index (document id -> (title, text))."""

    path: Path
    kind: str  # "beir" or "pairs"
    questions: list[EvalQuestion]
    corpus: dict[str, tuple[str, str]] = field(default_factory=dict)


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalSetError(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalSetError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise EvalSetError(f"{path}:{number}: expected a JSON object")
        yield number, row


def load_eval_set(path: Path, split: str = "test") -> EvalSet:
    """Read a BEIR folder or a JSONL file of question/answer pairs."""
    path = Path(path)
    if path.is_dir():
        return _load_beir(path, split)
    if not path.is_file():
        raise EvalSetError(f"no question set at {path}: give a BEIR folder or a .jsonl file of question/answer pairs")
    questions = []
    for number, row in _read_jsonl(path):
        question, answer = row.get("question"), row.get("answer")
        if not isinstance(question, str) or not question.strip():
            raise EvalSetError(f"{path}:{number}: needs a \"question\" string")
        if not isinstance(answer, str) or not answer.strip():
            raise EvalSetError(f"{path}:{number}: needs an \"answer\" string (a passage of your notes that answers it)")
        source = row.get("source")
        questions.append(
            EvalQuestion(
                id=str(row.get("id", number)),
                question=question.strip(),
                answer=answer,
                relevant={str(source): 1} if source else {},
                lang=str(row.get("lang") or language_of(question)),
                tag=str(row.get("tag") or row.get("kind") or ""),
            )
        )
    if not questions:
        raise EvalSetError(f"{path} holds no questions")
    return EvalSet(path, "pairs", questions)


def _load_beir(folder: Path, split: str) -> EvalSet:
    corpus_file, queries_file, qrels_file = folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels"
    qrels_file = qrels_file / f"{split}.tsv"
    for needed in (corpus_file, queries_file, qrels_file):
        if not needed.is_file():
            raise EvalSetError(f"{folder} is not a BEIR set: {needed.relative_to(folder)} is missing")
    corpus: dict[str, tuple[str, str]] = {}
    for number, row in _read_jsonl(corpus_file):
        if "_id" not in row or not isinstance(row.get("text"), str):
            raise EvalSetError(f"{corpus_file}:{number}: needs \"_id\" and \"text\"")
        corpus[str(row["_id"])] = (str(row.get("title") or ""), row["text"])
    queries = {}
    for number, row in _read_jsonl(queries_file):
        if "_id" not in row or not isinstance(row.get("text"), str):
            raise EvalSetError(f"{queries_file}:{number}: needs \"_id\" and \"text\"")
        queries[str(row["_id"])] = row["text"]
    relevant: dict[str, dict[str, int]] = {}
    for number, line in enumerate(qrels_file.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t")
        if len(parts) < 3 or (number == 1 and not parts[2].strip().lstrip("-").isdigit()):
            continue  # the header, or a blank line
        qid, did, grade = parts[0], parts[1], int(parts[2])
        if grade > 0 and did in corpus:
            relevant.setdefault(qid, {})[did] = grade
    questions = []
    for qid, text in queries.items():
        if qid in relevant:
            doc_text = " ".join(corpus[d][1] for d in relevant[qid])
            questions.append(
                EvalQuestion(
                    id=qid,
                    question=text,
                    relevant=relevant[qid],
                    lang=language_group(language_of(text), language_of(doc_text)),
                )
            )
    if not questions:
        raise EvalSetError(f"{qrels_file} judges none of the queries against the corpus")
    return EvalSet(folder, "beir", questions, corpus)


# ---------------------------------------------------------------- scores


def dcg(grades: Sequence[int]) -> float:
    """Discounted cumulative gain of graded relevances in rank order (2^g - 1 gains, log2 discounts)."""
    return sum((2**g - 1) / math.log2(rank + 2) for rank, g in enumerate(grades))


def ndcg(ranked_docs: Sequence[str], relevant: dict[str, int], depth: int = NDCG_DEPTH) -> float:
    """nDCG@depth of a document ranking against graded judgements."""
    ideal = dcg(sorted(relevant.values(), reverse=True)[:depth])
    return dcg([relevant.get(d, 0) for d in ranked_docs[:depth]]) / ideal if ideal else 0.0


@dataclass
class QuestionResult:
    """How one question fared."""

    id: str
    question: str
    group: str
    tag: str
    doc_rank: int | None  # 1-based rank of the first relevant document, None when not retrieved
    ndcg: float
    chunk_hit: bool | None  # for answer pairs: a top-k chunk shares a passage with the answer
    below_floor: bool  # the app would answer "not found in your documents"
    top_source: str


@dataclass
class Scores:
    """Averages over a group of questions."""

    questions: int
    doc_hit_at_k: float
    mrr: float
    ndcg_at_10: float
    chunk_hit_at_k: float | None
    not_found: float  # share the app would answer "not found" (best chunk below the relevance floor)

    @classmethod
    def of(cls, results: Sequence[QuestionResult], k: int) -> Scores:
        """Average the results."""
        n = len(results)
        chunk = [r.chunk_hit for r in results if r.chunk_hit is not None]
        return cls(
            questions=n,
            doc_hit_at_k=sum(r.doc_rank is not None and r.doc_rank <= k for r in results) / n,
            mrr=sum(1.0 / r.doc_rank for r in results if r.doc_rank) / n,
            ndcg_at_10=sum(r.ndcg for r in results) / n,
            chunk_hit_at_k=sum(chunk) / len(chunk) if chunk else None,
            not_found=sum(r.below_floor for r in results) / n,
        )


@dataclass
class EvalReport:
    """What `python -m rag eval` prints, saves, and the app shows."""

    set_path: str
    kind: str
    k: int
    collection: str
    embedding_model: str
    keyword_search: bool
    chunk_size: int
    created: str
    seconds: float
    overall: Scores
    by_language: dict[str, Scores]
    by_tag: dict[str, Scores]
    skipped: list[tuple[str, str]]
    results: list[QuestionResult]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalReport:
        """Rebuild a saved report."""
        data = dict(data)
        data["overall"] = Scores(**data["overall"])
        data["by_language"] = {key: Scores(**v) for key, v in data["by_language"].items()}
        data["by_tag"] = {key: Scores(**v) for key, v in data["by_tag"].items()}
        data["skipped"] = [tuple(s) for s in data["skipped"]]
        data["results"] = [QuestionResult(**r) for r in data["results"]]
        return cls(**data)

    def table(self) -> str:
        """The scores as aligned text lines, overall first."""
        rows = [("all", self.overall)]
        rows += [(f"lang {name}", s) for name, s in sorted(self.by_language.items())]
        rows += [(f"tag {name}", s) for name, s in sorted(self.by_tag.items())]
        k = self.k
        lines = [f"{'group':16} {'questions':>9} {f'chunk hit@{k}':>11} {f'doc hit@{k}':>9} {'MRR':>6} "
                 f"{'nDCG@10':>7} {'not found':>9}"]
        for name, s in rows:
            chunk = f"{s.chunk_hit_at_k:.3f}" if s.chunk_hit_at_k is not None else "-"
            lines.append(
                f"{name[:16]:16} {s.questions:9d} {chunk:>11} {s.doc_hit_at_k:9.3f} {s.mrr:6.3f} "
                f"{s.ndcg_at_10:7.3f} {s.not_found:9.3f}"
            )
        return "\n".join(lines)


def _grouped(results: Sequence[QuestionResult], key: Callable[[QuestionResult], str], k: int) -> dict[str, Scores]:
    groups: dict[str, list[QuestionResult]] = {}
    for r in results:
        if name := key(r):
            groups.setdefault(name, []).append(r)
    return {name: Scores.of(rs, k) for name, rs in groups.items()}


# ---------------------------------------------------------------- running an evaluation

ProgressCallback = Callable[[int, int], None]  # questions done, questions total


def report_path(settings: Settings) -> Path:
    """Where the last report is kept (the app reads it from there)."""
    return settings.data_dir / "eval" / REPORT_NAME


def load_last_report(settings: Settings) -> EvalReport | None:
    """The report of the last `python -m rag eval` in this data dir, or None."""
    path = report_path(settings)
    try:
        return EvalReport.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def beir_settings(settings: Settings, eval_set: EvalSet) -> Settings:
    """Settings for the BEIR corpus's own index: under data_dir/eval, one per set and embedding/chunking choice."""
    key = hashlib.sha1(
        f"{eval_set.path.resolve()}|{settings.embedding_model}|{settings.chunk_size}|{settings.chunk_overlap}".encode()
    ).hexdigest()[:12]
    return settings.model_copy(
        update={"data_dir": settings.data_dir / "eval" / f"beir-{key}", "collection": "beir", "chroma_url": None}
    )


def write_beir_documents(eval_set: EvalSet, folder: Path) -> dict[str, str]:
    """Each corpus entry as a text file (title, blank line, text); returns file name -> document id."""
    folder.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    for doc_id, (title, text) in eval_set.corpus.items():
        name = hashlib.sha1(doc_id.encode("utf-8")).hexdigest()[:16] + ".txt"
        names[name] = doc_id
        body = f"{title}\n\n{text}" if title else text
        target = folder / name
        if not target.is_file() or target.read_text(encoding="utf-8") != body:
            target.write_text(body, encoding="utf-8")
    for stale in folder.glob("*.txt"):
        if stale.name not in names:
            stale.unlink()
    return names


class Evaluator:
    """Runs a question set through a searcher (the same hybrid search the app uses) and scores it."""

    def __init__(self, searcher: Any, k: int, doc_id: Callable[[str], str] = lambda source: source) -> None:
        self.searcher = searcher
        self.k = k
        self.doc_id = doc_id

    def run(
        self, eval_set: EvalSet, settings: Settings, on_progress: ProgressCallback | None = None
    ) -> EvalReport:
        """Search every question and score the rankings."""
        started = time.perf_counter()
        index = self.searcher.keyword_index()
        finder = PassageFinder(index.texts) if eval_set.kind == "pairs" else None
        depth = max(self.k, NDCG_DEPTH)
        results: list[QuestionResult] = []
        skipped: list[tuple[str, str]] = []
        for done, q in enumerate(eval_set.questions, start=1):
            relevant = dict(q.relevant)
            group = q.lang
            if finder is not None and q.answer is not None:
                positions = finder.matches(q.answer)
                if not positions:
                    skipped.append((q.question, "its answer is not in the collection"))
                    if on_progress:
                        on_progress(done, len(eval_set.questions))
                    continue
                gold_sources = {self.doc_id(str(index.metadatas[i].get("source", ""))) for i in positions}
                if relevant:  # a named source: match it by its end, as users write relative paths
                    named = next(iter(relevant))
                    gold_sources = {s for s in gold_sources if s == named or s.endswith("/" + named)} or gold_sources
                relevant = {s: 1 for s in gold_sources}
                group = language_group(q.lang, language_of(q.answer))
            result = self.searcher.search(q.question, k=depth)
            hits = result.hits
            ranked: list[str] = []
            for hit in hits:
                doc = self.doc_id(hit.source)
                if doc not in ranked:
                    ranked.append(doc)
            doc_rank = next((i + 1 for i, d in enumerate(ranked) if d in relevant), None)
            chunk_hit = None
            if q.answer is not None:
                chunk_hit = any(shares_passage(h.text, q.answer) for h in hits[: self.k])
            results.append(
                QuestionResult(
                    id=q.id,
                    question=q.question,
                    group=group,
                    tag=q.tag,
                    doc_rank=doc_rank,
                    ndcg=ndcg(ranked, relevant),
                    chunk_hit=chunk_hit,
                    below_floor=not result.found,
                    top_source=hits[0].source if hits else "",
                )
            )
            if on_progress:
                on_progress(done, len(eval_set.questions))
        if not results:
            raise EvalSetError(
                f"none of the {len(eval_set.questions)} answers in {eval_set.path} is in collection "
                f"'{settings.collection}': index the notes they come from first"
            )
        return EvalReport(
            set_path=str(eval_set.path),
            kind=eval_set.kind,
            k=self.k,
            collection=settings.collection,
            embedding_model=settings.embedding_model,
            keyword_search=settings.keyword_search,
            chunk_size=settings.chunk_size,
            created=time.strftime("%Y-%m-%d %H:%M:%S"),
            seconds=round(time.perf_counter() - started, 2),
            overall=Scores.of(results, self.k),
            by_language=_grouped(results, lambda r: r.group, self.k),
            by_tag=_grouped(results, lambda r: r.tag, self.k),
            skipped=skipped,
            results=results,
        )


def save_report(settings: Settings, report: EvalReport) -> Path:
    """Keep the report as the data dir's last one."""
    path = report_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(report.to_json(), ensure_ascii=False, indent=1), encoding="utf-8")
    partial.replace(path)
    return path
