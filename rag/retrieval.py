"""Find the chunks that answer a question: vector search plus BM25 keyword search, fused by reciprocal rank.

Filters by folder and by date range apply to both. Dates named in the question ("March 2024", "2024年3月")
become a date filter by themselves. A relevance floor decides when nothing in the index answers the question.
"""

from __future__ import annotations

import calendar
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from rag.config import Settings
from rag.errors import NookError
from rag.language import CJK_RUN, text_language
from rag.store import open_client, open_collection

# Reciprocal rank fusion's constant: 60 is the usual one, but answers come from the top 5, where the first ranks
# should count. A small constant makes rank count more than being listed twice, so the keyword ranking can count
# less for English questions (below) and still seat its best hit: a chunk first by keywords and nowhere among the
# vectors scores w/(k+1), above the vectors' fifth, 1/(k+5), whenever w > (k+1)/(k+5) = 0.6 (with 60 it needs 0.94).
RRF_K = 5
CROSS_LANGUAGE_TOP = 3  # vector hits whose language is compared with the question's
CROSS_LANGUAGE_KEYWORD_WEIGHT = 0.5
# How much the keyword ranking counts, by the question's language. English questions share words with many
# passages that do not answer them; Chinese ones are matched on character pairs, which find the answer far more often
# than the vectors do (keyword 0.756 against vector 0.628 hit@5 on the Chinese dev set). Measured with RRF_K 5 on the
# development sets (docs/BENCHMARKS.md), multilingual-use-v3: English keyword weight 1 -> 0.67 / 0.75 took
# paraphrased English questions from 0.322 to 0.380 / 0.368, the other sets within 0.03; 0.5 gave 0.404 but cannot
# seat a keyword-only best hit (see RRF_K). RRF_K 60 -> 5 alone moved every set by at most 0.02.
KEYWORD_WEIGHT = {"en": 0.7, "zh": 1.0}
LOOK_UP_WORDS = 2  # a question of this many keywords or fewer is a look-up of those words: keywords count fully
TRANSLATED_KEYWORD_WEIGHT = 0.5  # the dictionary-translated question's keyword ranking (rag/translate.py)


class EmptyIndexError(NookError):
    """There is nothing to search yet."""


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk: where it came from, its cosine similarity to the question, and its fused rank score."""

    id: str
    text: str
    source: str
    page: int | None
    score: float
    metadata: dict[str, Any]
    fused: float = 0.0


@dataclass(frozen=True)
class SearchFilters:
    """Restrict a search to folders (and their subfolders) and to a range of document dates (YYYYMMDD)."""

    folders: tuple[str, ...] = ()
    date_from: int | None = None
    date_to: int | None = None

    def is_empty(self) -> bool:
        """True when nothing is filtered."""
        return not self.folders and self.date_from is None and self.date_to is None


@dataclass
class SearchResult:
    """Hits in rank order, whether any passed the relevance floor, and the filters that were applied."""

    hits: list[Hit]
    found: bool
    filters: SearchFilters = field(default_factory=SearchFilters)


# ---------------------------------------------------------------- tokens for keyword search

_WORD = re.compile(r"[a-z0-9]+(?:[.'_-][a-z0-9]+)*|[\u3400-\u9fff\uf900-\ufaff]+")
_STOP = frozenset(
    "a an and are as at be but by did do does for from had has have how i in is it its me my of on or so "
    "that the their them there these this to was we were what when where which who why will with you your".split()
)


def keyword_tokens(text: str) -> list[str]:
    """Lower-case English words (stop words dropped) and, for Chinese, every character and character bigram."""
    tokens: list[str] = []
    for match in _WORD.finditer(text.lower()):
        word = match.group(0)
        if CJK_RUN.fullmatch(word):
            tokens.extend(word)
            tokens.extend(word[i : i + 2] for i in range(len(word) - 1))
        elif word not in _STOP:
            tokens.append(word)
    return tokens


# ---------------------------------------------------------------- dates named in a question

_MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): number for number, name in enumerate(calendar.month_abbr) if name})
_EN_MONTH_YEAR = re.compile(
    r"\b(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?\s+(?:of\s+)?((?:19|20)\d{2})\b", re.IGNORECASE
)
_ISO_MONTH = re.compile(r"(?<!\d)((?:19|20)\d{2})-(0[1-9]|1[0-2])(?:-(0[1-9]|[12]\d|3[01]))?(?!\d)")
_ZH_DATE = re.compile(r"((?:19|20)\d{2})\s*年\s*(1[0-2]|0?[1-9])\s*月(?:\s*(3[01]|[12]\d|0?[1-9])\s*[日号])?")


def dates_in_question(question: str) -> tuple[int, int] | None:
    """A date range the question names at month or day precision, as (YYYYMMDD, YYYYMMDD), else None."""

    def month_range(year: int, month: int, day: int | None) -> tuple[int, int]:
        if day:
            return year * 10000 + month * 100 + day, year * 10000 + month * 100 + day
        last = calendar.monthrange(year, month)[1]
        return year * 10000 + month * 100 + 1, year * 10000 + month * 100 + last

    if match := _ZH_DATE.search(question):
        return month_range(int(match.group(1)), int(match.group(2)), int(match.group(3)) if match.group(3) else None)
    if match := _ISO_MONTH.search(question):
        return month_range(int(match.group(1)), int(match.group(2)), int(match.group(3)) if match.group(3) else None)
    if match := _EN_MONTH_YEAR.search(question):
        return month_range(int(match.group(2)), _MONTHS[match.group(1).lower()], None)
    return None


# ---------------------------------------------------------------- keyword index over a collection snapshot


class KeywordIndex:
    """BM25 (bm25s, sparse) over every chunk of a collection, with the chunks' metadata for filtering."""

    def __init__(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]]) -> None:
        import bm25s

        self.ids = ids
        self.texts = texts
        self.metadatas = metadatas
        self.position = {cid: i for i, cid in enumerate(ids)}
        self.folders = np.array([str(m.get("folder", "")) for m in metadatas], dtype=object)
        self.dates = np.array([int(m.get("date", 0) or 0) for m in metadatas], dtype=np.int64)
        # Languages of the chunks ("" for one indexed before chunks were tagged, which could be either).
        self.languages = frozenset(str(m.get("lang", "")) for m in metadatas)
        self._bm25 = bm25s.BM25()
        corpus = [keyword_tokens(t) or ["\u2205"] for t in texts]  # bm25s wants no empty documents
        self._bm25.index(corpus, show_progress=False)

    @classmethod
    def from_collection(cls, collection: Any, page: int = 5000) -> KeywordIndex:
        """Read every chunk of the collection, in pages."""
        ids: list[str] = []
        texts: list[str] = []
        metas: list[dict[str, Any]] = []
        offset = 0
        while True:
            got = collection.get(include=["documents", "metadatas"], limit=page, offset=offset)
            ids += got["ids"]
            texts += [d or "" for d in got["documents"]]
            metas += [dict(m or {}) for m in got["metadatas"]]
            if len(got["ids"]) < page:
                break
            offset += page
        return cls(ids, texts, metas)

    def mask(self, filters: SearchFilters) -> np.ndarray | None:
        """1.0 for chunks the filters allow, 0.0 for the rest; None when nothing is filtered."""
        if filters.is_empty():
            return None
        allowed = np.ones(len(self.ids), dtype=bool)
        if filters.folders:
            prefixes = tuple(f.rstrip("/") for f in filters.folders)
            allowed &= np.array(
                [any(f == p or f.startswith(p + "/") for p in prefixes) for f in self.folders], dtype=bool
            )
        if filters.date_from is not None:
            allowed &= self.dates >= filters.date_from
        if filters.date_to is not None:
            allowed &= self.dates <= filters.date_to
        return allowed.astype(np.float32)

    def search(self, question: str, k: int, mask: np.ndarray | None) -> list[tuple[int, float]]:
        """Positions and BM25 scores of the k best chunks with a score above zero."""
        return self.search_tokens(keyword_tokens(question), k, mask)

    def search_tokens(self, tokens: list[str], k: int, mask: np.ndarray | None) -> list[tuple[int, float]]:
        """The same for tokens made already (a translated question's)."""
        if not tokens or not self.ids:
            return []
        scores = self._bm25.get_scores(tokens, weight_mask=mask)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return [(int(i), float(scores[i])) for i in top if scores[i] > 0]


def reciprocal_rank_fusion(*rankings: dict[str, int], weights: Sequence[float] = ()) -> dict[str, float]:
    """Fuse rankings (id -> 0-based rank) into id -> sum of weight/(RRF_K + rank + 1), best first.

    Weights default to 1 for every ranking; ties keep first-seen order.
    """
    fused: dict[str, float] = {}
    for i, ranks in enumerate(rankings):
        weight = weights[i] if i < len(weights) else 1.0
        for cid, rank in ranks.items():
            fused[cid] = fused.get(cid, 0.0) + weight / (RRF_K + rank + 1)
    return dict(sorted(fused.items(), key=lambda item: item[1], reverse=True))


def keyword_weight(question: str, vector_languages: Sequence[str], cross_language: bool) -> float:
    """How much the keyword ranking counts in the fusion.

    First by the question's language (KEYWORD_WEIGHT). Then, for a Chinese question: its keywords can only match
    Chinese notes, so when a cross-language embedding model finds the best passages in English, matches of its
    common characters are accidents: they count half again. Measured on the development sets: +0.07 hit@5 for
    Chinese questions over English notes, -0.01 to -0.03 elsewhere (docs/BENCHMARKS.md).
    """
    asked_in = text_language(question)
    weight = KEYWORD_WEIGHT.get(asked_in, 1.0)
    if asked_in != "zh":
        # English words that match are mostly names and codes, the surest sign there is: an English question keeps
        # its weight even when the vectors point to Chinese notes (a name USE does not know gets random neighbours).
        # A look-up of one or two words ("bomlynx", "Horfield Sungold") trusts them fully: the vectors of a name they
        # do not know are noise, and at 0.7 the only note holding it tied with the vectors' first guess (hostile
        # corpus). Dev sets: 14 of 197 en questions are this short; en hit@5 unchanged.
        return 1.0 if len(keyword_tokens(question)) <= LOOK_UP_WORDS else weight
    if not cross_language or not vector_languages:
        return weight
    agreeing = sum(lang == asked_in for lang in vector_languages[:CROSS_LANGUAGE_TOP])
    if agreeing * 2 > min(len(vector_languages), CROSS_LANGUAGE_TOP):
        return weight
    return weight * CROSS_LANGUAGE_KEYWORD_WEIGHT


# ---------------------------------------------------------------- the searcher


class Searcher:
    """Hybrid search over one collection; safe to share between threads (Streamlit sessions)."""

    def __init__(self, settings: Settings, embedder: Any, client: Any = None) -> None:
        self.settings = settings
        self.embedder = embedder
        self.client = client if client is not None else open_client(settings)
        self._keyword: KeywordIndex | None = None
        self._keyword_key: Any = None
        self._collection_obj: Any = None
        self._translator_obj: Any = None
        self._lock = threading.Lock()

    def relevance_floor(self, first_model_only: bool = False) -> float:
        """The configured floor, else the embedding model's own.

        Cosine scales differ between models, and for a pair of models between a question both ask and one the first
        asks alone.
        """
        if self.settings.relevance_floor is not None:
            return self.settings.relevance_floor
        spec = getattr(self.embedder, "spec", None)
        if spec is None:
            return 0.25
        if first_model_only and getattr(spec, "parts", ()):
            return float(spec.first_only_floor)
        return float(spec.relevance_floor)

    def _last_sync(self) -> float | None:
        """When a sync or removal last finished writing this collection (every write path stamps it)."""
        import sqlite3

        path = self.settings.manifest_path
        if not path.exists():
            return None
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
                row = db.execute(
                    "SELECT last_sync FROM runs WHERE store=? AND collection=?",
                    (self.settings.store_key, self.settings.collection),
                ).fetchone()
        except sqlite3.OperationalError:  # no runs table yet
            return None
        return row[0] if row else None

    def _current(self) -> tuple[Any, KeywordIndex]:
        """The collection and its keyword index, reopened and rebuilt only when a write finished since.

        Counting a 100k-chunk collection takes Chroma about 10 ms, so freshness comes from the manifest instead.
        """
        stamp: Any = self._last_sync()
        with self._lock:
            if stamp is None and self._collection_obj is not None:
                # Written without a manifest (not by Nook's ingest): fall back to counting.
                stamp = ("count", self._collection_obj.count())
            if self._keyword is None or self._keyword_key != stamp:
                collection = open_collection(
                    self.client, self.settings.collection, self.embedder.name, self.embedder.dim, create=False
                )
                index = KeywordIndex.from_collection(collection) if collection is not None else None
                if collection is None or index is None or not index.ids:
                    raise EmptyIndexError(
                        f"collection '{self.settings.collection}' is empty: index your notes first with "
                        "`python -m ingest PATH`"
                    )
                if stamp is None:
                    stamp = ("count", collection.count())
                self._collection_obj, self._keyword, self._keyword_key = collection, index, stamp
            return self._collection_obj, self._keyword

    def _collection(self) -> Any:
        return self._current()[0]

    def check_index(self) -> None:
        """Raise EmptyIndexError, with what to do, when there is nothing to search."""
        self._current()

    def keyword_index(self, collection: Any = None) -> KeywordIndex:
        """The BM25 index over the collection as of its last finished write."""
        return self._current()[1]

    def search(
        self,
        question: str,
        k: int | None = None,
        filters: SearchFilters | None = None,
        keyword: bool | None = None,
    ) -> SearchResult:
        """The k best chunks for the question; dates named in the question narrow the search when they match."""
        k = k or self.settings.retrieval_k
        keyword = self.settings.keyword_search if keyword is None else keyword
        filters = filters or SearchFilters()
        collection, index = self._current()
        dated_by_question = False
        if filters.date_from is None and filters.date_to is None and (named := dates_in_question(question)):
            dated = replace(filters, date_from=named[0], date_to=named[1])
            mask = index.mask(dated)
            if mask is not None and mask.any():  # a date no document has would hide everything: ignore it
                filters, dated_by_question = dated, True
        result = self._search(collection, index, question, k, filters, keyword)
        if dated_by_question and result.hits:
            # "What did I write in March 2024?" is answered by whatever is dated then, however similar.
            result.found = True
        return result

    def _search(
        self, collection: Any, index: KeywordIndex, question: str, k: int, filters: SearchFilters, keyword: bool
    ) -> SearchResult:
        mask = index.mask(filters)
        if mask is not None and not mask.any():
            return SearchResult([], False, filters)
        # Candidates per list: from the configured k, not the requested one, so a longer list (an evaluation's
        # top 10) starts with exactly the chunks the app would have used.
        pool = max(4 * self.settings.retrieval_k, 20, k)
        query_vector = np.asarray(self.embedder.embed_query(question), dtype=np.float32)
        spec = getattr(self.embedder, "spec", None)
        asked_in = text_language(question)

        # Vector candidates, with the filters as a Chroma where clause.
        where = self._where(index, filters)
        pair = bool(getattr(spec, "parts", ()))  # two models in one vector (rag.embeddings.PairEmbedder)
        first_only = pair and asked_in != spec.second_language
        if pair and not first_only and index.languages - {asked_in}:
            # A pair (USE + MiniLM): MiniLM ranks English passages well and others not at all. When USE alone puts
            # passages in another language at most of its top 3, the question is about those notes: USE alone asks
            # it. Dev sets, hit@5: English questions over Chinese notes 0.538 -> 0.628, paraphrased English 0.497 ->
            # 0.480, English 0.883 either way (with "any of the top 3": 0.654 and 0.450).
            from rag.embeddings import first_model_only

            alone = first_model_only(spec, query_vector)
            probe = collection.query(
                query_embeddings=[alone.tolist()],
                n_results=min(CROSS_LANGUAGE_TOP, len(index.ids)),
                where=where,
                include=[],
            )
            others = sum(self._language(index, collection, cid) != asked_in for cid in probe["ids"][0])
            if others * 2 > len(probe["ids"][0]):
                query_vector, first_only = alone, True
        found = collection.query(
            query_embeddings=[query_vector.tolist()],
            n_results=min(pool, len(index.ids)),
            where=where,
            include=["distances"],
        )
        vector_rank = {cid: rank for rank, cid in enumerate(found["ids"][0])}
        cosine = {cid: 1.0 - d for cid, d in zip(found["ids"][0], found["distances"][0], strict=True)}

        keyword_rank: dict[str, int] = {}
        if keyword:
            for rank, (position, _score) in enumerate(index.search(question, pool, mask)):
                keyword_rank[index.ids[position]] = rank

        cross_language = spec is not None and spec.cross_language
        # Notes all in the question's language: nothing to translate for (no dictionary to load, no BM25 pass).
        translate = keyword and self.settings.translate_questions and bool(index.languages - {asked_in})
        languages: list[str] = []
        if cross_language and (keyword_rank or translate):  # other models do not compare languages: nothing to read
            languages = [self._language(index, collection, cid) for cid in found["ids"][0][:CROSS_LANGUAGE_TOP]]
        weight = keyword_weight(question, languages, cross_language)
        translated_rank: dict[str, int] = {}
        # A Chinese question's words are looked for in English too (English notes are the usual case). An English
        # question's only when a cross-language model puts notes in Chinese among its top hits: otherwise its Chinese
        # words bury English answers under Chinese chunks (paraphrased English questions lost 0.11 hit@5 that way).
        if translate and (
            asked_in == "zh" or any(language != asked_in for language in languages)
        ):
            tokens = self._translator().tokens(question, asked_in)
            for rank, (position, _score) in enumerate(index.search_tokens(tokens, pool, mask)):
                translated_rank[index.ids[position]] = rank
        fused = reciprocal_rank_fusion(
            vector_rank, keyword_rank, translated_rank, weights=(1.0, weight, TRANSLATED_KEYWORD_WEIGHT)
        )
        ranked = list(fused)
        best = ranked[:k]

        gone: set[str] = set()
        while missing := [cid for cid in best if cid not in cosine]:
            # Keyword-only hits: score them by their stored vectors, so every hit has a cosine. One that Chroma no
            # longer holds was deleted by a sync still running (its file changed or went away; the keyword snapshot
            # is from the last finished write): it is no source any more, and the next candidate takes its place.
            stored = collection.get(ids=missing, include=["embeddings"])
            for cid, vector in zip(stored["ids"], stored["embeddings"], strict=True):
                cosine[cid] = float(np.dot(np.asarray(vector, dtype=np.float32), query_vector))
            gone.update(cid for cid in missing if cid not in cosine)
            best = [cid for cid in ranked if cid not in gone][:k]

        hits = []
        for cid in best:
            position = index.position.get(cid)
            if position is None:  # indexed after the keyword snapshot: read it directly
                got = collection.get(ids=[cid], include=["documents", "metadatas"])
                text, meta = got["documents"][0], dict(got["metadatas"][0])
            else:
                text, meta = index.texts[position], index.metadatas[position]
            page = meta.get("page")
            hits.append(
                Hit(cid, text, str(meta.get("source", "")), int(page) if page else None, cosine[cid], meta, fused[cid])
            )
        found_any = bool(hits) and max(h.score for h in hits) >= self.relevance_floor(first_only)
        return SearchResult(hits, found_any, filters)

    def _translator(self) -> Any:
        if self._translator_obj is None:
            from rag.translate import QueryTranslator

            self._translator_obj = QueryTranslator()
        return self._translator_obj

    @staticmethod
    def _language(index: KeywordIndex, collection: Any, cid: str) -> str:
        position = index.position.get(cid)
        if position is not None:
            meta, text = index.metadatas[position], index.texts[position]
        else:  # indexed after the keyword snapshot
            got = collection.get(ids=[cid], include=["documents", "metadatas"])
            meta, text = dict(got["metadatas"][0] or {}), got["documents"][0] or ""
        return str(meta.get("lang") or text_language(text))

    @staticmethod
    def _where(index: KeywordIndex, filters: SearchFilters) -> dict[str, Any] | None:
        clauses: list[dict[str, Any]] = []
        if filters.folders:
            prefixes = tuple(f.rstrip("/") for f in filters.folders)
            folders = sorted({f for f in index.folders if any(f == p or f.startswith(p + "/") for p in prefixes)})
            clauses.append({"folder": {"$in": folders or ["\u2205"]}})
        if filters.date_from is not None:
            clauses.append({"date": {"$gte": filters.date_from}})
        if filters.date_to is not None:
            clauses.append({"date": {"$lte": filters.date_to}})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def vector_search(settings: Settings, embedder: Any, question: str, k: int = 5, client: Any = None) -> list[Hit]:
    """Plain vector search (no keywords, no filters): the baseline the benchmarks compare with."""
    searcher = Searcher(settings, embedder, client)
    collection, index = searcher._current()
    return searcher._search(collection, index, question, k, SearchFilters(), False).hits
