"""Where a worker keeps its on-disk table store: a stable directory it holds a lock on.

A worker restarted on the same machine (or a StatefulSet pod restarted on the same volume)
must find its RocksDB store again, so that recovery only replays the changelog records
written since the store's last persisted offset instead of the whole changelog. Several
workers sharing one ``BATCHBRIDGE_DATA_DIR`` each take the lowest numbered slot whose lock
is free; the lock (``flock``) dies with its process, kill -9 included, so a restarted worker
gets its old slot back.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from connector.errors import ConfigError

MAX_SLOTS = 64


@dataclass
class StateDir:
    """A locked worker directory; the lock is held until :meth:`release` or process exit."""

    path: Path
    slot: int
    _lock: IO[str]

    def release(self) -> None:
        """Give the slot up (tests; a worker keeps it for its lifetime)."""
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()
        if self in _HELD:
            _HELD.remove(self)


# Every claimed directory stays referenced: a collected StateDir closes its lock file, and
# another worker would then open the same RocksDB store (which fails on RocksDB's own LOCK,
# or worse, shares a store whose partitions this worker has not closed).
_HELD: list[StateDir] = []


def claim(data_dir: str, app_id: str) -> StateDir:
    """The first free worker slot under ``data_dir/app_id``, locked for this process."""
    base = Path(data_dir) / app_id
    base.mkdir(parents=True, exist_ok=True)
    for slot in range(MAX_SLOTS):
        path = base / f"worker-{slot}"
        path.mkdir(exist_ok=True)
        lock = open(path / ".lock", "a+")  # noqa: SIM115 - held for the process's lifetime
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        state = StateDir(path, slot, lock)
        _HELD.append(state)
        return state
    raise ConfigError(f"all {MAX_SLOTS} worker slots under {base} are taken by running workers")
