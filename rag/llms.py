"""LLM backend registry: one factory per backend, imported lazily, each saying how its model wants prompts."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from langchain_core.language_models import BaseLanguageModel
from pydantic import ValidationError

from rag.config import Settings
from rag.errors import BackendError
from rag.models import (
    FAMILY_METADATA_KEY,
    FetchJson,
    PromptFamily,
    check_gguf,
    fetch_json,
    gguf_family,
    llamafile_family,
    ollama_family,
    resolve_model_path,
)

Mode = Literal["chat", "completion"]

OLLAMA_URL = "http://127.0.0.1:11434"
LLAMAFILE_URL = "http://127.0.0.1:8080"
FAKE_ANSWER = "This is a fake answer from Nook [1]."


@dataclass(frozen=True)
class LLMInfo:
    """A ready LangChain model plus what the prompt selector needs to know about it.

    Attributes:
        llm: the LangChain chat model or LLM.
        backend: registry name of the backend that built it.
        model: the model file or name it serves.
        chat: True when the backend applies the model's own chat template and takes messages;
            False when it takes one raw string that must already carry the model's special tokens.
        family: the prompt family of the model (llama2, llama3, chatml, generic).
    """

    llm: BaseLanguageModel
    backend: str
    model: str
    chat: bool
    family: PromptFamily
    n_ctx: int | None = None  # the backend's own context window where it is fixed or reported, else None
    timeout: float | None = None  # seconds a server backend's client waits for an answer (request_timeout), else None

    def __post_init__(self) -> None:
        # The family travels with the model object too, so the prompt selector can ask the model itself.
        self.llm.metadata = {**(self.llm.metadata or {}), FAMILY_METADATA_KEY: self.family}


LLMFactory = Callable[[Settings, Mode | None, FetchJson], LLMInfo]
"""(settings, requested mode or None for the backend's default, JSON fetcher for server lookups) -> LLMInfo."""


def _require(module: str, backend: str, pip: str) -> ModuleType:
    """Import a backend's library, or say in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendError(f"backend '{backend}' needs: pip install {pip}") from None


def _check_mode(backend: str, mode: Mode | None, supported: tuple[Mode, ...]) -> Mode:
    chosen = mode or supported[0]
    if chosen not in supported:
        raise BackendError(f"backend '{backend}' has no {chosen} mode (supported: {', '.join(supported)})")
    return chosen


def _llamacpp(settings: Settings, mode: Mode | None, fetch: FetchJson) -> LLMInfo:
    _check_mode("llamacpp", mode, ("completion",))
    _require("llama_cpp", "llamacpp", "llama-cpp-python==0.3.36 (build it with portable CMAKE_ARGS, see STACK.md)")
    from langchain_community.llms import LlamaCpp

    path = check_gguf(resolve_model_path(settings.llm_model))
    family = settings.prompt_family or gguf_family(path)
    try:
        llm = LlamaCpp(
            model_path=str(path),
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            repeat_penalty=settings.repeat_penalty,
            max_tokens=settings.max_tokens,
            n_ctx=settings.n_ctx,
            n_batch=settings.n_batch,
            n_threads=settings.n_threads,
            n_gpu_layers=settings.n_gpu_layers,
            streaming=True,
            verbose=False,
        )
    except ValueError as exc:  # LlamaCpp reports every load failure as a pydantic ValidationError
        reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise BackendError(
            f"llama.cpp cannot load {path} ({reason.removeprefix('Value error, ')}); is the file complete?"
        ) from None
    return LLMInfo(llm=llm, backend="llamacpp", model=str(path), chat=False, family=family)


def _gpt4all(settings: Settings, mode: Mode | None, fetch: FetchJson) -> LLMInfo:
    _check_mode("gpt4all", mode, ("completion",))
    _require("gpt4all", "gpt4all", "gpt4all==2.8.2")
    from rag.llm_wrappers import StreamingGPT4All

    path = check_gguf(resolve_model_path(settings.llm_model))
    family = settings.prompt_family or gguf_family(path)
    try:
        llm = StreamingGPT4All(
            model=str(path),
            allow_download=False,
            max_tokens=settings.max_tokens,
            n_predict=settings.max_tokens,  # the wrapper passes both and n_predict wins
            temp=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            repeat_penalty=settings.repeat_penalty,
            n_batch=settings.n_batch,
            n_threads=settings.n_threads,
            device="gpu" if settings.n_gpu_layers else "cpu",
            streaming=True,
        )
    except Exception as exc:  # noqa: BLE001 - gpt4all raises a bare Exception("Model not loaded")
        raise BackendError(
            f"gpt4all cannot load {path} ({exc}); its llama.cpp is old: for newer GGUFs remove the pre-tokenizer "
            f"field from a copy (python -m gguf.scripts.gguf_new_metadata --remove-metadata tokenizer.ggml.pre "
            f"IN OUT) or use the llamacpp backend"
        ) from None
    # The wrapper gives gpt4all no context size: it runs with its default of 2048 tokens.
    return LLMInfo(llm=llm, backend="gpt4all", model=str(path), chat=False, family=family, n_ctx=2048)


def _llamafile(settings: Settings, mode: Mode | None, fetch: FetchJson) -> LLMInfo:
    _check_mode("llamafile", mode, ("completion",))
    from rag.llm_wrappers import CheckedLlamafile

    base_url = settings.llm_base_url or LLAMAFILE_URL
    family = settings.prompt_family or llamafile_family(base_url, fetch=fetch)
    llm = CheckedLlamafile(
        base_url=base_url,
        request_timeout=settings.request_timeout,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        repeat_penalty=settings.repeat_penalty,
        n_predict=settings.max_tokens,
        streaming=True,
    )
    return LLMInfo(
        llm=llm,
        backend="llamafile",
        model=base_url,
        chat=False,
        family=family,
        n_ctx=llamafile_n_ctx(base_url, fetch),
        timeout=settings.request_timeout,
    )


def llamafile_n_ctx(base_url: str, fetch: FetchJson) -> int | None:
    """The context size a llama-server / llamafile was started with (`/props`), or None when it does not say."""
    try:
        props = fetch(f"{base_url.rstrip('/')}/props", None, 2.0)
    except (OSError, ValueError):
        return None
    value = (props.get("default_generation_settings") or {}).get("n_ctx")
    return int(value) if isinstance(value, int) and value > 0 else None


def _ollama(settings: Settings, mode: Mode | None, fetch: FetchJson) -> LLMInfo:
    chosen = _check_mode("ollama", mode, ("chat", "completion"))
    module = _require("langchain_ollama", "ollama", "langchain-ollama==1.1.0")
    if not settings.llm_model:
        raise BackendError("backend 'ollama' needs llm_model set to an Ollama model name (e.g. llama3.2)")
    base_url = settings.llm_base_url or OLLAMA_URL
    family = settings.prompt_family or ollama_family(base_url, settings.llm_model, fetch=fetch)
    common: dict[str, Any] = {
        "model": settings.llm_model,
        "base_url": base_url,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "top_k": settings.top_k,
        "repeat_penalty": settings.repeat_penalty,
        "num_predict": settings.max_tokens,
        "num_ctx": settings.n_ctx,
        "num_thread": settings.n_threads,
        "client_kwargs": {"timeout": settings.request_timeout},
    }
    if chosen == "chat":
        chat_llm = module.ChatOllama(**common)
        return LLMInfo(
            llm=chat_llm,
            backend="ollama",
            model=settings.llm_model,
            chat=True,
            family=family,
            timeout=settings.request_timeout,
        )
    llm = _raw_ollama_llm_class(module.OllamaLLM)(**common)
    return LLMInfo(
        llm=llm, backend="ollama", model=settings.llm_model, chat=False, family=family, timeout=settings.request_timeout
    )


def _raw_ollama_llm_class(base: type) -> type:
    """OllamaLLM that sends `raw: true`, so Ollama does not wrap our already templated prompt in its own."""

    class RawOllamaLLM(base):  # type: ignore[valid-type, misc]
        def _generate_params(self, prompt: str, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
            return {**super()._generate_params(prompt, stop, **kwargs), "raw": True}

    return RawOllamaLLM


def _fake(settings: Settings, mode: Mode | None, fetch: FetchJson) -> LLMInfo:
    """A model for tests that streams FAKE_ANSWER one character at a time; no model is loaded.

    Its family comes from `prompt_family`, or from the GGUF named by `llm_model` (read, never loaded).
    """
    chosen = _check_mode("fake", mode, ("completion", "chat"))
    from langchain_core.language_models import FakeListChatModel, FakeStreamingListLLM

    if settings.prompt_family:
        family: PromptFamily = settings.prompt_family
    elif settings.llm_model:
        family = gguf_family(check_gguf(resolve_model_path(settings.llm_model)))
    else:
        family = "generic"
    if chosen == "chat":
        chat_llm = FakeListChatModel(responses=[FAKE_ANSWER])
        return LLMInfo(llm=chat_llm, backend="fake", model="fake-chat", chat=True, family=family)
    completion_llm = FakeStreamingListLLM(responses=[FAKE_ANSWER])
    return LLMInfo(llm=completion_llm, backend="fake", model="fake", chat=False, family=family)


_BACKENDS: dict[str, LLMFactory] = {
    "llamacpp": _llamacpp,
    "ollama": _ollama,
    "gpt4all": _gpt4all,
    "llamafile": _llamafile,
    "fake": _fake,
}


def known_backends() -> list[str]:
    """Names of the registered backends, sorted."""
    return sorted(_BACKENDS)


def register_llm(name: str, factory: LLMFactory) -> None:
    """Add (or replace) a backend factory under `name`."""
    _BACKENDS[name] = factory


def get_factory(name: str) -> LLMFactory:
    """The factory registered under `name`; an unknown name lists the known ones."""
    try:
        return _BACKENDS[name]
    except KeyError:
        raise BackendError(f"unknown LLM backend '{name}'. Available: {', '.join(known_backends())}") from None


def build_llm(settings: Settings, *, mode: Mode | None = None, fetch: FetchJson = fetch_json) -> LLMInfo:
    """Build the configured backend's model.

    Args:
        settings: Nook settings; the llm_* block and sampling fields are used.
        mode: "chat" or "completion" for backends that offer both (ollama, fake); None takes the backend's default.
        fetch: JSON fetcher for server lookups (Ollama `/api/show`, llamafile `/props`); tests inject a fake.

    Raises:
        BackendError: unknown backend, missing package, missing or invalid model file, unsupported mode.
    """
    return get_factory(settings.llm_backend)(settings, mode, fetch)
