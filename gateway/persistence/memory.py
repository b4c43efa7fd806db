"""A store that keeps its content in this process only (``persistence: enabled: false``).

Its content is a ``Tables`` (tables.py: the one statement of what each op does, which the
SQLite store writes too), so it doubles as the reference model in tests: reopening the *same*
instance hands back what was committed (a restart without a crash); a new instance starts
empty.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.broker.records import Snapshot, StoreOp
from gateway.persistence.base import StoreError, StoreStats
from gateway.persistence.limit import Notify, SizeLimit
from gateway.persistence.tables import Tables, apply, is_store_op


class MemoryStore:
    def __init__(self, *, max_size_bytes: int = 0) -> None:
        self.tables = Tables()
        self._limit = SizeLimit(max_size_bytes) if max_size_bytes else None
        self._open = False
        self._fail_next = 0
        self._commits = 0
        self._ops = 0
        self._failures = 0

    async def open(self) -> Snapshot:
        self._open = True
        return self.tables.snapshot()

    async def commit(self, ops: Sequence[StoreOp]) -> None:
        self._apply(ops)

    def submit(self, ops: Sequence[StoreOp], *, urgent: bool = True) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self._apply(ops)
        except StoreError as exc:
            future.set_exception(exc)
        else:
            future.set_result(None)
        return future

    def _apply(self, ops: Sequence[StoreOp]) -> None:
        if not self._open:
            raise StoreError("store is not open")
        if self._fail_next:
            self._fail_next -= 1
            self._failures += 1
            raise StoreError("injected failure")
        # Validate before applying so that a bad op leaves nothing half-applied, as a rolled
        # back transaction would.
        for op in ops:
            if not is_store_op(op):
                self._failures += 1
                raise StoreError(f"not a StoreOp: {op!r}")
        apply(self.tables, ops)
        self._commits += 1
        self._ops += len(ops)
        self.over_limit()

    async def close(self) -> None:
        self._open = False

    def fail_next_commits(self, count: int = 1) -> None:
        """Test hook: the next ``count`` commit() calls raise StoreError and store nothing."""
        self._fail_next = count

    @property
    def stats(self) -> StoreStats:
        return StoreStats(
            commits=self._commits,
            calls=self._commits,
            ops=self._ops,
            failures=self._failures,
            failed_calls=self._failures,
            size_bytes=self.tables.size_bytes,
        )

    def over_limit(self) -> bool:
        return self._limit is not None and self._limit.update(self.tables.size_bytes)

    @property
    def on_limit(self) -> Notify | None:
        return None if self._limit is None else self._limit.on_change

    @on_limit.setter
    def on_limit(self, notify: Notify | None) -> None:
        if self._limit is not None:
            self._limit.on_change = notify
