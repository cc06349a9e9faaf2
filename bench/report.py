"""Write one section of docs/BENCHMARKS.md, replacing the previous figures of that section."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nFigures from the scripts in `bench/`; rerun the command shown to reproduce.\n"


def write_section(title: str, lines: list[str]) -> None:
    """Replace (or append) the `## title` section."""
    text = BENCHMARKS.read_text(encoding="utf-8") if BENCHMARKS.exists() else HEADER
    marker = f"## {title}"
    body = "\n".join([marker, "", *lines]).rstrip("\n") + "\n"
    start = text.find(marker)
    if start < 0:
        BENCHMARKS.write_text(text.rstrip("\n") + "\n\n" + body, encoding="utf-8")
        return
    end = text.find("\n## ", start + 1)  # the section keeps its place among the others
    rest = "\n" + text[end + 1 :] if end >= 0 else ""
    BENCHMARKS.write_text(text[:start] + body + rest, encoding="utf-8")
