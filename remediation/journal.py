"""The decision journal: every decision is written before acting and updated after, in SQLite
(WAL mode), so a restart mid-action neither repeats nor forgets the action.

One row per (firing episode, policy) for actions, and one per episode for its revert. The
episode key is unique: a repeated delivery finds its row instead of deciding again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,          -- episode key + policy (+ ':revert')
    policy TEXT NOT NULL,
    kind TEXT NOT NULL,                -- scale_pool | cpu_fallback | notify_only | revert
    status TEXT NOT NULL,              -- decided | acted | advised | skipped | failed | pending
    reason TEXT NOT NULL DEFAULT '',
    alertname TEXT NOT NULL DEFAULT '',
    fingerprint TEXT NOT NULL DEFAULT '',
    slo TEXT NOT NULL DEFAULT '',
    target TEXT NOT NULL DEFAULT '',   -- the workload or route acted on
    plan TEXT NOT NULL DEFAULT '{}',   -- JSON: state before, state to set
    due REAL,                          -- reverts: not before this time
    parent INTEGER REFERENCES actions(id),
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_policy ON actions (policy, status, updated);
CREATE INDEX IF NOT EXISTS actions_status ON actions (status, updated);
CREATE INDEX IF NOT EXISTS actions_target ON actions (target, status);
"""
FINAL = ("acted", "advised", "skipped", "failed")


@dataclass
class Entry:
    id: int
    key: str
    policy: str
    kind: str
    status: str
    reason: str
    alertname: str
    fingerprint: str
    slo: str
    target: str
    plan: dict[str, Any]
    due: float | None
    parent: int | None
    created: float
    updated: float

    def public(self) -> dict[str, Any]:
        out = self.__dict__.copy()
        out["created"] = _iso(self.created)
        out["updated"] = _iso(self.updated)
        out["due"] = _iso(self.due) if self.due is not None else None
        return out


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class Journal:
    """Thread-safe access to the journal file (one connection, one lock)."""

    def __init__(self, path: str | Path, clock: Any = time.time) -> None:
        self.path = str(path)
        self.clock = clock
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a decision survives power loss
        self._db.executescript(SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def get(self, key: str) -> Entry | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM actions WHERE key = ?", (key,)).fetchone()
        return _entry(row) if row else None

    def insert(self, **fields: Any) -> Entry:
        now = self.clock()
        fields = {"created": now, "updated": now, **fields}
        if "plan" in fields:
            fields["plan"] = json.dumps(fields["plan"], sort_keys=True)
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        with self.transaction() as db:
            db.execute(f"INSERT INTO actions ({cols}) VALUES ({marks})", tuple(fields.values()))
        entry = self.get(fields["key"])
        assert entry is not None
        return entry

    def update(self, entry_id: int, **fields: Any) -> None:
        fields["updated"] = self.clock()
        if "plan" in fields:
            fields["plan"] = json.dumps(fields["plan"], sort_keys=True)
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction() as db:
            db.execute(f"UPDATE actions SET {sets} WHERE id = ?", (*fields.values(), entry_id))

    def count_acted(self, policy: str | None, since: float) -> int:
        """Actions taken (not reverts) since a time, for one policy or all."""
        sql = (
            "SELECT COUNT(*) FROM actions "
            "WHERE status = 'acted' AND kind != 'revert' AND updated >= ?"
        )
        args: tuple[Any, ...] = (since,)
        if policy is not None:
            sql += " AND policy = ?"
            args += (policy,)
        with self._lock:
            return int(self._db.execute(sql, args).fetchone()[0])

    def last_acted(self, policy: str) -> float | None:
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(updated) FROM actions WHERE policy = ? AND status = 'acted' "
                "AND kind != 'revert'",
                (policy,),
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def newer_action(self, target: str, after_id: int) -> int | None:
        """The id of an action taken on ``target`` after entry ``after_id``, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM actions WHERE target = ? AND id > ? AND kind != 'revert' "
                "AND status = 'acted' ORDER BY id LIMIT 1",
                (target, after_id),
            ).fetchone()
        return int(row[0]) if row else None

    def unfinished(self) -> list[Entry]:
        """Decisions written but not completed: a crash happened between decide and act."""
        return self.query(status="decided")

    def due_reverts(self, now: float) -> list[Entry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM actions WHERE kind = 'revert' AND status = 'pending' AND due <= ? "
                "ORDER BY due",
                (now,),
            ).fetchall()
        return [_entry(r) for r in rows]

    def query(
        self,
        policy: str | None = None,
        status: str | None = None,
        slo: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[Entry]:
        clauses: list[str] = []
        args: list[Any] = []
        for col, value in (("policy", policy), ("status", status), ("slo", slo), ("kind", kind)):
            if value is not None:
                clauses.append(f"{col} = ?")
                args.append(value)
        if since is not None:
            clauses.append("updated >= ?")
            args.append(since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM actions {where} ORDER BY id DESC LIMIT ?", (*args, limit)
            ).fetchall()
        return [_entry(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _entry(row: sqlite3.Row) -> Entry:
    data = dict(row)
    data["plan"] = json.loads(data["plan"] or "{}")
    return Entry(**data)
