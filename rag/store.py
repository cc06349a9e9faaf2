"""Open Chroma (embedded, or a server through its URL) and the collection that belongs to an embedding model."""

from __future__ import annotations

import errno
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from rag.config import Settings
from rag.errors import EmbeddingModelMismatch, NookError, SettingsError, StoreError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

MODEL_KEY = "nook_embedding_model"
DIM_KEY = "nook_embedding_dim"
LOW_SPACE_BYTES = 16 * 1024 * 1024  # less free than this where the data dir lives, and a failed write is blamed on it
_NO_SPACE_WORDS = ("no space left", "disk is full", "disk full", "quota exceeded")


def is_store_failure(exc: BaseException) -> bool:
    """True for what Chroma, the manifest or the file system raise when the store cannot be used (not for bugs)."""
    import chromadb.errors
    import httpx

    return isinstance(exc, (OSError, sqlite3.Error, httpx.HTTPError, chromadb.errors.ChromaError))


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):  # the data dir may not exist yet
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def _out_of_space(path: Path, exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if any(words in str(exc).lower() for words in _NO_SPACE_WORDS):
        return True
    # Chroma reports some failed writes without the reason ("Error in compaction: ..."): ask the file system.
    free = _free_bytes(path)
    return free is not None and free < LOW_SPACE_BYTES


def store_error(settings: Settings, exc: BaseException) -> StoreError:
    """One line for a store that failed in use: the data dir's disk is full, the Chroma server went away, ...

    The one place where such failures are named; callers catch what `is_store_failure` accepts.
    """
    name = type(exc).__name__
    text = " ".join(str(exc).split())[:200]
    local = not settings.chroma_url or isinstance(exc, (OSError, sqlite3.Error))  # the manifest is always local
    if local and _out_of_space(settings.data_dir, exc):
        free = _free_bytes(settings.data_dir)
        left = f"{free // 1024} KB free; " if free is not None else ""
        return StoreError(
            f"no space left on the device holding {settings.data_dir} ({left}{name}: {text}): free some space "
            "or move data_dir, then run again (an interrupted sync is finished by the next one)"
        )
    if not local:
        return StoreError(
            f"the Chroma server at {settings.chroma_url} failed ({name}: {text}): is it still running? Start it "
            "again with `chroma run --path DIR --host 127.0.0.1` (the same DIR), or unset NOOK_CHROMA_URL"
        )
    return StoreError(f"cannot use the index in {settings.data_dir} ({name}: {text})")


@contextmanager
def store_failures(settings: Settings) -> Iterator[None]:
    """Calls into an open store: a Chroma server that went away or a full disk becomes one StoreError line.

    Nothing is cached as broken: the next call tries the store again, so callers work once the fault is gone.
    """
    try:
        yield
    except NookError:
        raise
    except Exception as exc:
        if not is_store_failure(exc):
            raise
        raise store_error(settings, exc) from None


def open_client(settings: Settings) -> ClientAPI:
    """A Chroma client with telemetry off: PersistentClient in the data dir, or HttpClient for chroma_url."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    if not settings.chroma_url:
        try:
            settings.chroma_dir.mkdir(parents=True, exist_ok=True)
            return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=chroma_settings)
        except Exception as exc:  # noqa: BLE001 - chromadb raises its own and OS errors alike
            if _out_of_space(settings.data_dir, exc):
                raise store_error(settings, exc) from None
            raise StoreError(f"cannot open the index in {settings.chroma_dir}: {exc}") from None
    url = urlparse(settings.chroma_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise SettingsError(f"chroma_url must look like http://127.0.0.1:8000, not {settings.chroma_url!r}")
    try:
        return chromadb.HttpClient(
            host=url.hostname,
            port=url.port or (443 if url.scheme == "https" else 8000),
            ssl=url.scheme == "https",
            settings=chroma_settings,
        )
    except Exception as exc:  # noqa: BLE001 - connection errors come in many types
        raise StoreError(
            f"cannot reach the Chroma server at {settings.chroma_url} ({type(exc).__name__}); "
            "start it with `chroma run --path DIR --host 127.0.0.1` or unset NOOK_CHROMA_URL"
        ) from None


def open_collection(
    client: ClientAPI, name: str, model: str, dim: int, create: bool = True, settings: Settings | None = None
) -> Collection | None:
    """The collection for these documents; it must have been built with the same embedding model.

    Returns None when it does not exist and create is False. With `settings`, a store that cannot be reached or
    written is named as `store_error` names it (which server, which disk, what to do).
    """
    try:
        if create:
            collection = client.get_or_create_collection(
                name=name, metadata={MODEL_KEY: model, DIM_KEY: dim, "hnsw:space": "cosine"}
            )
        else:
            existing = {c if isinstance(c, str) else c.name for c in client.list_collections()}
            if name not in existing:
                return None
            collection = client.get_collection(name=name)
    except Exception as exc:  # noqa: BLE001
        if settings is not None and is_store_failure(exc):
            raise store_error(settings, exc) from None
        raise StoreError(f"cannot open collection '{name}': {type(exc).__name__}: {exc}") from None
    meta = collection.metadata or {}
    built_with = meta.get(MODEL_KEY)
    if built_with is not None and (built_with != model or int(meta.get(DIM_KEY, dim)) != dim):
        raise EmbeddingModelMismatch(
            f"collection '{name}' was built with embedding model {built_with} ({meta.get(DIM_KEY)} dims), "
            f"but {model} ({dim} dims) is configured; re-ingest with `python -m ingest --rebuild PATH` "
            f"or set NOOK_EMBEDDING_MODEL={built_with}"
        )
    return collection


def index_model(settings: Settings) -> str | None:
    """The registered embedding model the configured collection was built with; None if there is no such collection.

    Reads the collection's metadata only: no model is loaded, and an embedded index that does not exist yet is not
    created.
    """
    from rag.embeddings import EMBEDDING_MODELS

    if not settings.chroma_url and not settings.chroma_dir.exists():
        return None
    client = open_client(settings)
    with store_failures(settings):
        existing = {c if isinstance(c, str) else c.name for c in client.list_collections()}
        if settings.collection not in existing:
            return None
        built_with = (client.get_collection(name=settings.collection).metadata or {}).get(MODEL_KEY)
    return built_with if built_with in EMBEDDING_MODELS else None


def follow_index_model(settings: Settings) -> tuple[Settings, str | None]:
    """Settings that embed with the model the collection was built with, when no model was chosen; and a notice.

    An index built before the default model changed (or under another default) keeps working instead of stopping
    with a model mismatch. A model chosen in nook.toml, NOOK_EMBEDDING_MODEL or an argument is kept: then a
    mismatch is still an error, with what to do.
    """
    if "embedding_model" in settings.model_fields_set:
        return settings, None
    built_with = index_model(settings)
    if built_with is None or built_with == settings.embedding_model:
        return settings, None
    notice = (
        f"collection '{settings.collection}' was built with {built_with}: using it (the default is now "
        f"{settings.embedding_model}; re-ingest with `python -m ingest --rebuild PATH` to switch)"
    )
    return settings.model_copy(update={"embedding_model": built_with}), notice


def drop_collection(client: ClientAPI, name: str) -> None:
    """Delete a collection if it exists."""
    existing = {c if isinstance(c, str) else c.name for c in client.list_collections()}
    if name in existing:
        client.delete_collection(name)


def iter_ids(collection: Collection, page: int = 5000) -> Iterator[str]:
    """Every id in the collection, read in pages."""
    offset = 0
    while True:
        batch = collection.get(include=[], limit=page, offset=offset)["ids"]
        yield from batch
        if len(batch) < page:
            return
        offset += page


def batched(items: list[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive slices of at most size items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
