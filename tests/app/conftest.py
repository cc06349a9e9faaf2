"""Fixtures for the page tests: the sample notes indexed once per session, a private copy per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the developer's NOOK_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOOK_")}
    env["NOOK_CONFIG"] = "/nonexistent/nook.toml"
    env.update(extra)
    return env


def index_samples(data_dir: Path, **env: str) -> None:
    """`python -m ingest data/samples` into data_dir, with the real bundled embedding model (or the one env sets)."""
    done = subprocess.run(
        [sys.executable, "-m", "ingest", str(SAMPLES)],
        cwd=ROOT,
        env=clean_env(NOOK_DATA_DIR=str(data_dir), **env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="session")
def indexed_samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding the sample notes, indexed once for the whole session; copy it before changing it."""
    data_dir = tmp_path_factory.mktemp("indexed") / "nookdata"
    index_samples(data_dir)
    return data_dir


@pytest.fixture
def data_dir(indexed_samples: Path, tmp_path: Path) -> Path:
    """This test's own copy of the indexed samples."""
    target = tmp_path / "nookdata"
    shutil.copytree(indexed_samples, target)
    return target
