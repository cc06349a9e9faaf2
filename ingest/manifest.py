"""The sync manifest: SQLite in the data dir mapping each ingested file to its hash, settings and chunk ids."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    store TEXT NOT NULL,
    collection TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    config TEXT NOT NULL,
    chunk_ids TEXT NOT NULL,
    ingested_at REAL NOT NULL,
    PRIMARY KEY (store, collection, path)
);
CREATE TABLE IF NOT EXISTS runs (
    store TEXT NOT NULL,
    collection TEXT NOT NULL,
    dirty INTEGER NOT NULL DEFAULT 0,
    last_sync REAL,
    PRIMARY KEY (store, collection)
);
CREATE TABLE IF NOT EXISTS failures (
    store TEXT NOT NULL,
    collection TEXT NOT NULL,
    path TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (store, collection, path)
);
"""


@dataclass(frozen=True)
class FileRecord:
    """What the index holds for one file."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    config: str
    chunk_ids: tuple[str, ...]
    ingested_at: float


class Manifest:
    """Rows of one (store, collection); every write is its own committed transaction."""

    def __init__(self, path: Path, store: str, collection: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed row survives kill -9 and power loss
        self._db.executescript(_SCHEMA)
        self.store = store
        self.collection = collection
        self._key = (store, collection)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """One transaction: all statements inside commit together or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- files

    def files(self) -> dict[str, FileRecord]:
        """All file records of this collection, by path."""
        rows = self._db.execute(
            "SELECT path, size, mtime_ns, sha256, config, chunk_ids, ingested_at FROM files "
            "WHERE store=? AND collection=?",
            self._key,
        ).fetchall()
        return {
            row[0]: FileRecord(row[0], row[1], row[2], row[3], row[4], tuple(json.loads(row[5])), row[6])
            for row in rows
        }

    def put(self, record: FileRecord) -> None:
        """Insert or replace one file's record."""
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    *self._key,
                    record.path,
                    record.size,
                    record.mtime_ns,
                    record.sha256,
                    record.config,
                    json.dumps(list(record.chunk_ids)),
                    record.ingested_at,
                ),
            )
            self._db.execute("DELETE FROM failures WHERE store=? AND collection=? AND path=?", (*self._key, record.path))

    def touch(self, path: str, size: int, mtime_ns: int) -> None:
        """Record a new mtime for a file whose content did not change."""
        with self._tx():
            self._db.execute(
                "UPDATE files SET size=?, mtime_ns=? WHERE store=? AND collection=? AND path=?",
                (size, mtime_ns, *self._key, path),
            )

    def remove(self, path: str) -> None:
        """Forget a file."""
        with self._tx():
            self._db.execute("DELETE FROM files WHERE store=? AND collection=? AND path=?", (*self._key, path))
            self._db.execute("DELETE FROM failures WHERE store=? AND collection=? AND path=?", (*self._key, path))

    def clear(self) -> None:
        """Forget every file of this collection (for a rebuild)."""
        with self._tx():
            self._db.execute("DELETE FROM files WHERE store=? AND collection=?", self._key)
            self._db.execute("DELETE FROM failures WHERE store=? AND collection=?", self._key)

    # -- failures

    def record_failure(self, path: str, reason: str) -> None:
        """Remember why a file could not be ingested (shown by the UI and stats)."""
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO failures VALUES (?,?,?,?,?)", (*self._key, path, reason, time.time())
            )

    def failures(self) -> dict[str, str]:
        """Files that failed in their last attempt, with the reason."""
        rows = self._db.execute(
            "SELECT path, reason FROM failures WHERE store=? AND collection=?", self._key
        ).fetchall()
        return dict(rows)

    # -- run state

    def is_dirty(self) -> bool:
        """True when a previous run stopped between its first index write and its end."""
        row = self._db.execute("SELECT dirty FROM runs WHERE store=? AND collection=?", self._key).fetchone()
        return bool(row and row[0])

    def set_dirty(self, dirty: bool) -> None:
        """Mark the start (True) or clean end (False) of a run that writes to the index."""
        with self._tx():
            self._db.execute(
                "INSERT INTO runs (store, collection, dirty, last_sync) VALUES (?,?,?,?) "
                "ON CONFLICT(store, collection) DO UPDATE SET dirty=excluded.dirty, "
                "last_sync=COALESCE(excluded.last_sync, runs.last_sync)",
                (*self._key, int(dirty), None if dirty else time.time()),
            )

    def last_sync(self) -> float | None:
        """When the last run finished cleanly."""
        row = self._db.execute("SELECT last_sync FROM runs WHERE store=? AND collection=?", self._key).fetchone()
        return row[0] if row else None
