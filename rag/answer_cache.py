"""Answers to repeated questions, kept in SQLite in the data dir, keyed by model, parameters and the full prompt."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any


def cache_key(model: str, params: dict[str, Any], prompt: str) -> str:
    """A digest of everything that decides the answer: which model, how it samples, and the exact prompt."""
    payload = json.dumps({"model": model, "params": params, "prompt": prompt}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class AnswerCache:
    """A small key-value store of answer texts; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL, at REAL)")
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        """The cached answer, if any."""
        with self._lock:
            row = self._db.execute("SELECT answer FROM answers WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, answer: str) -> None:
        """Remember an answer."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?,?,?)", (key, answer, time.time()))

    def clear(self) -> None:
        """Forget every answer (after re-indexing, say)."""
        with self._lock:
            self._db.execute("DELETE FROM answers")

    def close(self) -> None:
        """Close the database."""
        self._db.close()
