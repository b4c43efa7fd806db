"""``persistence.max_size_mb``: how the limit is shared out, and when the store is full.

The limit covers the database file and its write-ahead log. The WAL gets a fixed share
(``wal_budget``): a commit that leaves it larger checkpoints and truncates it (sqlite.py).
Data gets the rest less a headroom. The store is *full* once its data -- pages in use as
measured after the last commit, plus an estimate of what was submitted since -- reaches
``high``, and has room again only once it is back under ``low``: the broker does not flip
between refusing and storing with every message.

The broker learns that the store is full when the ops that crossed ``high`` are submitted,
so one broker step (what one connection sent in one read) may be stored beyond it: the
headroom is for that step. The database file never shrinks (SQLite reuses its free pages),
so its size is the peak of the data, which this keeps below ``high`` + one step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from gateway.broker.records import PutMessage, PutQueueEntry, PutRetained, StoreOp

MIB = 1024 * 1024
_WAL_SHARE = (64 * 1024, 4 * MIB)  # at least, at most (4 MiB is SQLite's default checkpoint)
_HEADROOM = (32 * 1024, 16 * MIB)

# What a row costs in pages besides its payload and topic (record header, key, b-tree cell,
# pages partly filled): measured on this schema, about 40-70 bytes.
_MESSAGE_ROW = 72
_QUEUE_ROW = 48

Notify = Callable[[bool, str], None]  # (full, detail for the log)


def _clamp(value: int, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(bounds[1], value))


class SizeLimit:
    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        self.max_bytes = max_bytes
        self.wal_budget = _clamp(max_bytes // 8, _WAL_SHARE)
        headroom = _clamp(max_bytes // 16, _HEADROOM)
        self.high = max(max_bytes - self.wal_budget - headroom, max_bytes // 2)
        self.low = max(self.high - headroom, self.high // 2)
        self.full = False
        self.on_change: Notify | None = None

    def update(self, used: int) -> bool:
        """The data now takes ``used`` bytes: full or not? Tells ``on_change`` of a change."""
        if self.full:
            if used > self.low:
                return True
            self.full = False
        elif used < self.high:
            return False
        else:
            self.full = True
        if self.on_change is not None:
            self.on_change(self.full, self.describe(used))
        return self.full

    def describe(self, used: int) -> str:
        return (
            f"{used / MIB:.2f} MiB of data, full at {self.high / MIB:.2f} MiB, room again "
            f"below {self.low / MIB:.2f} MiB; persistence.max_size_mb {self.max_bytes / MIB:g} "
            f"with {self.wal_budget / MIB:.2f} MiB for the WAL"
        )


def growth(ops: Sequence[StoreOp]) -> int:
    """About how many bytes ``ops`` add to the store (deletes count as nothing until the
    next measurement: the estimate errs towards full)."""
    n = 0
    for op in ops:
        kind = type(op)
        if kind is PutMessage or kind is PutRetained:
            m = cast(PutMessage | PutRetained, op).message
            n += len(m.payload) + len(m.topic) + _MESSAGE_ROW
        elif kind is PutQueueEntry:
            n += _QUEUE_ROW
    return n
