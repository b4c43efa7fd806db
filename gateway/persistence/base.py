"""The store interface the server codes against, and its error and statistics types."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from gateway.broker.records import Snapshot, StoreOp


class StoreError(Exception):
    """A commit could not be made durable (disk full, I/O error, store closed, ...).

    Nothing of the failed commit is stored: its whole transaction was rolled back, so the
    caller must not acknowledge what it asked to store.
    """


@dataclass(frozen=True, slots=True)
class StoreStats:
    commits: int = 0  # transactions committed (one per group, not per commit() call)
    calls: int = 0  # commit() calls made durable
    ops: int = 0  # ops made durable
    failures: int = 0  # transactions that failed and were rolled back
    failed_calls: int = 0  # commit() calls that raised StoreError because of those
    last_commit_ms: float = 0.0  # duration of the last transaction (apply + commit + fsync)
    avg_commit_ms: float = 0.0
    max_commit_ms: float = 0.0
    size_bytes: int = 0  # live data in the store (pages in use), as of the last commit
    pending_calls: int = 0  # commit() calls waiting for the next transaction


@runtime_checkable
class Store(Protocol):
    async def open(self) -> Snapshot:
        """Create or migrate the schema and load everything. Call once, before commit()."""
        ...

    async def commit(self, ops: Sequence[StoreOp]) -> None:
        """Apply ``ops`` atomically, in order; returns once they are durable.

        Raises StoreError if they could not be stored (then none of them is). Calls are
        applied in the order they were made, so an empty commit() returns once everything
        committed before it is durable.
        """
        ...

    def submit(self, ops: Sequence[StoreOp], *, urgent: bool = True) -> asyncio.Future[None]:
        """Queue ``ops`` now, in call order, and return a future that is done once they are
        durable (or failed with StoreError). ``commit`` is ``await submit(ops)``; submitting
        synchronously lets a caller fix the order of its ops without awaiting anything.
        ``urgent=False``: nobody waits for these ops; the store may hold them back (up to its
        relaxed window) to write them with later ones."""
        ...

    async def close(self) -> None:
        """Make every pending commit durable, then release the store."""
        ...

    @property
    def stats(self) -> StoreStats: ...

    def over_limit(self) -> bool:
        """True while the store is full (its configured maximum size, see limit.py): from
        reaching it until it is back under it by a margin."""
        ...

    # Told (full, detail) whenever over_limit() changes, from submit() or after a commit.
    on_limit: Callable[[bool, str], None] | None
