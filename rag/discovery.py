"""Which local models can answer: GGUF files (bundled, in the models folder) and the tags of a running Ollama."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.errors import BackendError

OLLAMA_DEFAULT_URL = "http://127.0.0.1:11434"


@dataclass(frozen=True)
class ModelEntry:
    """One usable model and what a user needs to pick it."""

    backend: str
    name: str
    path: str
    size_mb: float
    quantisation: str
    prompt_family: str
    fits_in_memory: bool
    note: str = ""


def available_memory_mb() -> float:
    """MemAvailable from /proc/meminfo (Linux); infinity where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


@functools.lru_cache(maxsize=32)
def _gguf_details(path: str, mtime_ns: int) -> tuple[str, str]:
    """(quantisation, architecture) from GGUF metadata; cached by path and mtime."""
    import gguf

    reader = gguf.GGUFReader(path)
    quant, arch = "unknown", "unknown"
    field = reader.get_field("general.file_type")
    if field is not None:
        try:
            quant = gguf.LlamaFileType(int(field.contents())).name.removeprefix("MOSTLY_")
        except ValueError:
            quant = str(field.contents())
    field = reader.get_field("general.architecture")
    if field is not None:
        arch = str(field.contents())
    return quant, arch


def gguf_entry(path: Path, free_mb: float, n_ctx: int = 4096) -> ModelEntry:
    """Describe a GGUF file; a broken one is listed with the reason instead of failing the listing."""
    from rag.models import gguf_family

    size_mb = path.stat().st_size / 1e6
    # Weights plus a KV cache and scratch buffers; a rough, generous figure.
    need_mb = size_mb * 1.2 + n_ctx * 0.25 + 200
    try:
        quant, arch = _gguf_details(str(path), path.stat().st_mtime_ns)
        family = gguf_family(path)
        note = arch
    except (BackendError, ValueError, OSError) as exc:
        quant, family, note = "?", "?", f"unreadable: {exc}"
    return ModelEntry("llamacpp", path.name, str(path), round(size_mb, 1), quant, family, need_mb < free_mb, note)


def ollama_entries(base_url: str, timeout: float = 1.0) -> list[ModelEntry]:
    """The models a running Ollama serves; empty when none answers."""
    from rag.models import fetch_json

    try:
        tags = fetch_json(f"{base_url.rstrip('/')}/api/tags", None, timeout)
    except (OSError, ValueError):
        return []
    free_mb = available_memory_mb()
    entries = []
    for model in tags.get("models", []):
        details: dict[str, Any] = model.get("details") or {}
        size_mb = float(model.get("size", 0)) / 1e6
        entries.append(
            ModelEntry(
                "ollama",
                str(model.get("name", "")),
                base_url,
                round(size_mb, 1),
                str(details.get("quantization_level", "")),
                "chat",  # Ollama applies the model's own template in chat mode
                size_mb * 1.2 < free_mb,
                str(details.get("family", "")),
            )
        )
    return entries


def discover(models_dirs: list[Path], ollama_url: str | None = OLLAMA_DEFAULT_URL, n_ctx: int = 4096) -> list[ModelEntry]:
    """Every model Nook could use right now: the bundled GGUF, GGUF files in the folders, Ollama's tags."""
    from rag.models import bundled_gguf

    files: list[Path] = []
    try:
        files.append(bundled_gguf())
    except BackendError:
        pass
    for folder in models_dirs:
        if folder.is_dir():
            files.extend(sorted(folder.rglob("*.gguf")))
    free_mb = available_memory_mb()
    seen: set[Path] = set()
    entries = []
    for path in files:
        real = path.resolve()
        if real in seen or not path.is_file():
            continue
        seen.add(real)
        entries.append(gguf_entry(path, free_mb, n_ctx))
    if ollama_url:
        entries.extend(ollama_entries(ollama_url))
    return entries
