"""A progress bar on stderr for the command lines, drawn only on a terminal."""

from __future__ import annotations

import shutil
import sys
from typing import Any


def terminal_bar(total: int, unit: str, enabled: bool = True) -> Any:
    """A tqdm bar sized to the terminal, or None when disabled or stderr is not a terminal."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    # Where the terminal reports a size of 0x0 tqdm would draw nothing; get_terminal_size falls back to 80x24.
    size = shutil.get_terminal_size()
    return tqdm(total=total, unit=unit, file=sys.stderr, ncols=size.columns, nrows=size.lines, smoothing=0.1)
