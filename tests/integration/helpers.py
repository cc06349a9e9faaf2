"""Running the real commands and servers from tests."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, SAMPLES


def nook_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOOK_")}
    env.update({"NOOK_DATA_DIR": str(data_dir), "NOOK_CONFIG": "/nonexistent/nook.toml", "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return env


def run_ingest(*args: str | Path, data_dir: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ingest", *map(str, args)],
        cwd=ROOT,
        env=nook_env(data_dir, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stop_process(process: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a server a test started: terminate, and kill it if it has not stopped within the timeout."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_corpus(target: Path, files: int, seed: int = 7) -> Path:
    """A folder of varied notes built from the sample notes, reshuffled, so each file differs."""
    rng = random.Random(seed)
    paragraphs: list[str] = []
    for path in sorted(SAMPLES.rglob("*.md")):
        paragraphs += [p for p in path.read_text(encoding="utf-8").split("\n\n") if len(p) > 80]
    target.mkdir(parents=True, exist_ok=True)
    for number in range(files):
        body = "\n\n".join(rng.sample(paragraphs, k=min(12, len(paragraphs))))
        (target / f"note-{number:03d}.md").write_text(f"# Note {number}\n\n{body}\n", encoding="utf-8")
    shutil.copy(SAMPLES / "docs" / "bike-maintenance-log.pdf", target / "bike.pdf")
    return target
