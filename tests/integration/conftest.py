"""Fixtures shared by the command-line tests."""

from pathlib import Path

import pytest

from tests.conftest import SAMPLES
from tests.integration.helpers import run_ingest


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with the sample notes indexed by the real `python -m ingest`, once per test module."""
    data = tmp_path_factory.mktemp("cli") / "data"
    result = run_ingest(SAMPLES, data_dir=data)
    assert result.returncode == 0, result.stderr
    return data
