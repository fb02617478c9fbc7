"""Run leases: two sweep drivers on one study never train the same run twice.

Before a driver hands a run to an executor it *claims* it: in one write transaction it
checks that the run is not done and that no other living driver holds it, then writes
a lease row ``(run_id, owner, host, pid, proc_start, heartbeat_at)``. Recording the
run's result (or error) deletes its lease in the same transaction; a driver that
stops, by an exception or Ctrl-C, deletes all of its leases.

A lease whose owner died (``kill -9``, a crashed node) must be taken over, not
waited for forever. Whether the holder lives is decided like this:

* on the same host: its process exists and started at the recorded time (so a
  re-used pid is not mistaken for it); and, for a holder in this very process, its
  heartbeat is fresh;
* on another host: its heartbeat, refreshed every ``HEARTBEAT_SECONDS`` by a thread of
  the driver, is younger than ``LEASE_TTL_SECONDS``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from steadytune.store.file import DONE_STATUSES

HEARTBEAT_SECONDS = 20.0
LEASE_TTL_SECONDS = 120.0

LEASES_TABLE = """
CREATE TABLE IF NOT EXISTS leases (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id) ON DELETE CASCADE,
    owner TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, proc_start TEXT NOT NULL,
    heartbeat_at REAL NOT NULL);
"""
"""Added after schema version 1 shipped: created by the first claim (older studies too)."""


def process_start(pid: int) -> str:
    """A token of when process ``pid`` started ("" if unknown or not running).

    Linux: the start time in clock ticks since boot (``/proc/PID/stat`` field 22).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # fields after "pid (comm)": state is field 3


@dataclass(frozen=True)
class Owner:
    """One sweep driver: a unique token, and where it runs."""

    token: str
    host: str
    pid: int
    proc_start: str

    @classmethod
    def current(cls) -> "Owner":
        """A new owner for a driver in this process."""
        pid = os.getpid()
        return cls(uuid.uuid4().hex, socket.gethostname(), pid, process_start(pid))


def holder_alive(me: Owner, host: str, pid: int, proc_start: str, heartbeat_at: float,
                 now: float | None = None) -> bool:
    """Whether the lease holder described by the other arguments still lives (module doc)."""
    fresh = (time.time() if now is None else now) - heartbeat_at < LEASE_TTL_SECONDS
    if host != me.host:
        return fresh
    if pid == me.pid and proc_start == me.proc_start:
        return fresh  # another driver of this process: it heartbeats while it lives
    if not proc_start or not Path("/proc").is_dir():  # no /proc: fall back to the heartbeat
        return fresh and _pid_exists(pid)
    return process_start(pid) == proc_start


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(conn: sqlite3.Connection, run_id: str, me: Owner) -> str | None:
    """Take the lease of ``run_id`` for ``me`` inside the caller's write transaction.

    Returns:
        None when claimed; else why not: ``"done"`` or ``"leased by HOST pid PID"``.
    """
    conn.execute(LEASES_TABLE)
    status = conn.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
    if status is not None and status[0] in DONE_STATUSES:
        return "done"
    row = conn.execute("SELECT owner, host, pid, proc_start, heartbeat_at FROM leases WHERE run_id=?",
                       (run_id,)).fetchone()
    if row is not None and row[0] != me.token and holder_alive(me, *row[1:]):
        return f"leased by {row[1]} pid {row[2]}"
    conn.execute("INSERT OR REPLACE INTO leases (run_id, owner, host, pid, proc_start, heartbeat_at) "
                 "VALUES (?, ?, ?, ?, ?, ?)", (run_id, me.token, me.host, me.pid, me.proc_start, time.time()))
    return None


def release(conn: sqlite3.Connection, run_id: str | None, me: Owner | None = None) -> None:
    """Delete the lease of ``run_id`` (None: every lease of ``me``), if the table exists."""
    with contextlib.suppress(sqlite3.OperationalError):  # no leases table: nothing to release
        if run_id is not None:
            conn.execute("DELETE FROM leases WHERE run_id=?", (run_id,))
        elif me is not None:
            conn.execute("DELETE FROM leases WHERE owner=?", (me.token,))


class Heartbeat:
    """A daemon thread that refreshes ``me``'s leases in ``path`` on its own connection."""

    def __init__(self, path: Path, me: Owner, every: float = HEARTBEAT_SECONDS) -> None:
        self._path, self._me, self._every = path, me, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="steadytune-lease-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        conn = sqlite3.connect(str(self._path), timeout=30, isolation_level=None)
        try:
            while not self._stop.wait(self._every):
                with contextlib.suppress(sqlite3.OperationalError):  # busy: the next beat retries
                    conn.execute("UPDATE leases SET heartbeat_at=? WHERE owner=?", (time.time(), self._me.token))
        finally:
            conn.close()


__all__ = ["HEARTBEAT_SECONDS", "LEASE_TTL_SECONDS", "Heartbeat", "Owner", "claim", "holder_alive",
           "process_start", "release"]
