"""Connections accepted but not yet CONNECTed, counted per source address and in total.

Such a connection costs memory before anyone knows who it is: on a TLS listener ~300 KB of
TLS state from the moment its handshake starts. So at most ``per_address`` of them per
address are let start; as many more from that address wait their turn unread (a socket and
two small objects, no TLS state) and are let start as earlier ones send their CONNECT, so a
host whose clients all reconnect at once gets them all in; beyond that, and beyond ``total``
for all addresses together, a connection is closed at once. The connect timeout, counted from
accept, ends the wait of those that never get a turn.
"""

from __future__ import annotations

import collections
import enum
from typing import Generic, Protocol, TypeVar


class Verdict(enum.Enum):
    START = "start"  # counted as pending: may handshake and send its CONNECT
    WAIT = "wait"  # queued behind its address's pending connections, not read meanwhile
    REFUSE_ADDRESS = "refuse-address"  # its address has per_address pending and waiting
    REFUSE_TOTAL = "refuse-total"  # total pending reached


class Waiting(Protocol):
    closed: bool


C = TypeVar("C", bound=Waiting)


class PendingConnections(Generic[C]):
    def __init__(self, per_address: int, total: int) -> None:
        self.per_address = per_address  # 0 = unlimited
        self.total = total  # 0 = unlimited
        self.count = 0  # pending (started) connections, all addresses
        self.waiting = 0  # connections waiting for a turn, all addresses
        self._started: dict[str, int] = {}
        self._queues: dict[str, collections.deque[C]] = {}

    def arrive(self, source: str, conn: C) -> Verdict:
        if self.total and self.count >= self.total:
            return Verdict.REFUSE_TOTAL
        started = self._started.get(source, 0)
        if not self.per_address or started < self.per_address:
            self._started[source] = started + 1
            self.count += 1
            return Verdict.START
        queue = self._queues.setdefault(source, collections.deque())
        if len(queue) >= self.per_address:
            return Verdict.REFUSE_ADDRESS
        queue.append(conn)
        self.waiting += 1
        return Verdict.WAIT

    def leave_queue(self, source: str, conn: C) -> None:
        """A waiting connection went away before its turn."""
        queue = self._queues.get(source)
        if queue is None or conn not in queue:
            return
        queue.remove(conn)
        self.waiting -= 1
        if not queue:
            del self._queues[source]

    def done(self, source: str) -> C | None:
        """A pending connection of ``source`` sent its CONNECT or went away: its turn goes
        to the next connection waiting from that address, which is returned (now counted as
        pending), if any."""
        self.count -= 1
        left = self._started[source] - 1
        queue = self._queues.get(source)
        while queue:
            conn = queue.popleft()
            self.waiting -= 1
            if not conn.closed:
                if not queue:
                    del self._queues[source]
                self._started[source] = left + 1
                self.count += 1
                return conn
        self._queues.pop(source, None)
        if left:
            self._started[source] = left
        else:
            del self._started[source]
        return None
