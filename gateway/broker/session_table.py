"""The session table: every session by client id, every open connection by id, and which
session each connection holds."""

from __future__ import annotations

from collections.abc import Iterator

from gateway.broker.effects import ConnectionInfo
from gateway.broker.journal import Journal
from gateway.broker.session import Connection, Session


class SessionTable:
    __slots__ = ("_journal", "by_id", "conns", "online")

    def __init__(self, journal: Journal) -> None:
        # Public for the routing loop, which reads it once per matching subscription.
        self.by_id: dict[str, Session] = {}
        # Never replaced, only changed: the broker keeps a reference for its hot path.
        self.conns: dict[int, Connection] = {}
        self.online = 0  # sessions with a connection
        self._journal = journal

    def __len__(self) -> int:
        return len(self.by_id)

    def __contains__(self, client_id: str) -> bool:
        return client_id in self.by_id

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_id)

    def __getitem__(self, client_id: str) -> Session:
        return self.by_id[client_id]

    def get(self, client_id: str) -> Session | None:
        return self.by_id.get(client_id)

    def add(self, s: Session) -> None:
        self.by_id[s.client_id] = s
        self._journal.sessions_version += 1

    def remove(self, s: Session) -> None:
        """Forget ``s`` (its client id may already hold a newer session: that one stays)."""
        if self.by_id.get(s.client_id) is s:
            del self.by_id[s.client_id]
        self._journal.sessions_version += 1

    # --- connections ------------------------------------------------------------------

    def open(self, info: ConnectionInfo) -> None:
        self.conns[info.conn_id] = Connection(info)

    def connection(self, conn_id: int) -> Connection | None:
        return self.conns.get(conn_id)

    def close(self, conn_id: int) -> Connection | None:
        return self.conns.pop(conn_id, None)

    def attach(self, s: Session, conn: Connection) -> int:
        """``conn`` now holds ``s``. Returns how many sessions are online."""
        s.conn = conn
        conn.session = s
        self.online += 1
        self._journal.sessions_version += 1
        return self.online

    def unlink(self, conn: Connection) -> Session | None:
        """``conn`` no longer holds its session; returns that session if ``conn`` was its
        connection."""
        s = conn.session
        conn.session = None
        if s is not None and s.conn is conn:
            s.conn = None
            self.online -= 1
            self._journal.sessions_version += 1
            return s
        return None
