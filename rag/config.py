"""Typed settings for Nook: defaults < nook.toml < NOOK_* environment variables < explicit arguments."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rag.errors import SettingsError
from rag.models import PromptFamily

CONFIG_ENV = "NOOK_CONFIG"
DEFAULT_CONFIG_FILE = "nook.toml"


class Settings(BaseSettings):
    """Everything Nook can be configured with. Build it with `load_settings()`; pass it in."""

    model_config = SettingsConfigDict(env_prefix="NOOK_", extra="forbid", validate_default=True)

    # Where things live.
    data_dir: Path = Field(
        default=Path(".nook"),
        description="Folder for the embedded Chroma index, the sync manifest and caches.",
    )
    collection: str = Field(
        default="nook",
        min_length=3,
        max_length=512,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]$",
        description="Chroma collection name; separate collections keep separate sets of documents.",
    )
    chroma_url: str | None = Field(
        default=None,
        description="URL of a Chroma server (e.g. http://127.0.0.1:8000); unset means embedded Chroma in data_dir.",
    )

    # Embedding.
    embedding_model: str = Field(
        default="multilingual-use-v3+minilm",
        description=(
            "Name of a locally shipped embedding model (see rag.embeddings.EMBEDDING_MODELS): "
            "multilingual-use-v3+minilm (the default: USE for English, Chinese and across them, MiniLM beside it for "
            "English questions), multilingual-use-v3 (USE alone, about twice as fast to index), all-MiniLM-L6-v2 "
            "(English only), multilingual-e5-small (multilingual, 5-10x slower to index)."
        ),
    )
    embedding_batch_size: int = Field(default=32, ge=1, le=1024, description="Chunks per embedding batch.")
    embedding_precision: str = Field(
        default="auto",
        pattern=r"^(auto|float32|bfloat16)$",
        description="Compute precision for the embedding model on CPU: auto uses bfloat16 where the CPU has it.",
    )

    # Chunking.
    chunk_size: int = Field(
        default=300, ge=16, le=8192, description="Largest chunk, in tokens of the embedding model's tokenizer."
    )
    chunk_overlap: int = Field(default=45, ge=0, le=4096, description="Tokens shared by neighbouring chunks.")

    # Ingest limits.
    max_file_mb: float = Field(default=100.0, gt=0, description="Files larger than this are skipped as too large.")

    # Retrieval.
    retrieval_k: int = Field(default=5, ge=1, le=100, description="Chunks given to the model as context.")
    keyword_search: bool = Field(default=True, description="Fuse BM25 keyword search with vector search.")
    translate_questions: bool = Field(
        default=True,
        description=(
            "Keyword search also looks for a Chinese question's words translated into English, and an English "
            "question's into Chinese when the vectors find Chinese notes among the closest (CC-CEDICT dictionary), "
            "so questions find notes in the other language by their words too."
        ),
    )
    relevance_floor: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description=(
            "Below this cosine similarity of the best chunk, the answer is 'not found in your documents'; "
            "unset uses the embedding model's own floor (each model has its own scale of similarities)."
        ),
    )
    answer_cache: bool = Field(
        default=True, description="Reuse the answer to a repeated question (same model, settings and context)."
    )

    # LLM (see rag.llms for the backends and rag.prompts for how the prompt is chosen).
    llm_backend: str = Field(
        default="llamacpp",
        pattern=r"^[a-z0-9_-]+$",
        description="LLM backend: llamacpp, ollama, gpt4all, llamafile or fake (see rag.llms.known_backends()).",
    )
    llm_model: str | None = Field(
        default=None,
        description="A .gguf path (llamacpp, gpt4all) or an Ollama model name; unset means the bundled SmolLM2 GGUF.",
    )
    llm_base_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Server URL for ollama (default http://127.0.0.1:11434) or llamafile (http://127.0.0.1:8080).",
    )
    temperature: float = Field(default=0.1, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(default=0.95, gt=0.0, le=1.0, description="Nucleus sampling: keep tokens up to this mass.")
    top_k: int = Field(default=40, ge=0, le=1000, description="Sample from the k likeliest tokens; 0 disables.")
    repeat_penalty: float = Field(
        default=1.1, ge=0.5, le=2.0, description="Penalty for repeating recent tokens; 1.0 disables."
    )
    max_tokens: int = Field(default=512, ge=1, le=32768, description="Most tokens the model may generate per answer.")
    n_ctx: int = Field(
        default=4096, ge=256, le=131072, description="Context window in tokens (prompt plus answer), local models."
    )
    n_batch: int = Field(default=512, ge=1, le=8192, description="Prompt tokens evaluated per batch, local models.")
    n_threads: int | None = Field(
        default=None, ge=1, le=512, description="CPU threads for local models; unset lets llama.cpp decide."
    )
    n_gpu_layers: int = Field(
        default=0, ge=-1, le=1000, description="Layers offloaded to a GPU; 0 is CPU only, -1 offloads all."
    )
    request_timeout: float = Field(
        default=120.0, gt=0.0, le=3600.0, description="Seconds to wait for an LLM server (ollama, llamafile)."
    )
    prompt_family: PromptFamily | None = Field(
        default=None,
        description="Force a prompt format (llama2, llama3, chatml, generic); unset reads it from the model.",
    )

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, value: int, info: Any) -> int:
        size = info.data.get("chunk_size")
        if size is not None and value >= size:
            raise ValueError(f"chunk_overlap ({value}) must be smaller than chunk_size ({size})")
        return value

    @property
    def chroma_dir(self) -> Path:
        """Where embedded Chroma keeps its files."""
        return self.data_dir / "chroma"

    @property
    def manifest_path(self) -> Path:
        """The SQLite manifest that maps each ingested file to its hash and chunk ids."""
        return self.data_dir / "manifest.sqlite3"

    @property
    def store_key(self) -> str:
        """Identifies the Chroma instance the manifest rows belong to."""
        return self.chroma_url.rstrip("/") if self.chroma_url else "embedded"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit arguments win over NOOK_* variables, which win over the TOML file."""
        toml_file = init_settings.init_kwargs.pop("_config_file", None)  # type: ignore[attr-defined]
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build Settings from nook.toml (or NOOK_CONFIG / config_file), NOOK_* variables and overrides.

    Raises SettingsError with a one-line message when anything is invalid.
    """
    path = Path(config_file) if config_file else Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG_FILE))
    if config_file is not None and not path.is_file():
        raise SettingsError(f"config file not found: {path}")
    clean = {key: value for key, value in overrides.items() if value is not None}
    try:
        if path.is_file():
            return Settings(_config_file=path, **clean)  # type: ignore[call-arg]
        return Settings(**clean)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid settings ({problems})") from exc
    except (OSError, ValueError) as exc:  # a TOML syntax error is a ValueError
        raise SettingsError(f"cannot read settings from {path}: {exc}") from exc
