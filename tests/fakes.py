"""Test doubles for logic tests: a deterministic bag-of-words embedder with the real embedder's interface."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

_TOKEN = re.compile(r"[\u3400-\u9fff]|[A-Za-z0-9]+")


class HashEmbedder:
    """Hashes words (and single CJK characters) into a fixed-size unit vector; similar texts get similar vectors."""

    def __init__(self, name: str = "fake-hash", dim: int = 64) -> None:
        self.name = name
        self.dim = dim
        self.max_tokens = 512
        self.calls: list[int] = []  # batch sizes, so tests can see what was embedded

    def count_tokens(self, text: str) -> int:
        return len(_TOKEN.findall(text))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in _TOKEN.findall(text.lower()):
                bucket = int.from_bytes(hashlib.md5(token.encode()).digest()[:4], "little") % self.dim
                out[row, bucket] += 1.0
            norm = np.linalg.norm(out[row])
            out[row] = out[row] / norm if norm else 1.0 / np.sqrt(self.dim)
        return out

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode([text])[0].tolist()
