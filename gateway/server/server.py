"""The asyncio shell around the pure broker: listeners, connections, durable commits, timers.

The one rule this module enforces is DESIGN §4: the store operations a broker step produced
are committed before any packet that step produced is written, because those packets may
acknowledge (PUBACK/PUBREC) or deliver what the operations make durable. What may go first
is decided in barrier.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from gateway.broker.access import Authorizer
from gateway.broker.core import Broker
from gateway.broker.effects import Action, Effects, Send, SetKeepAlive
from gateway.broker.records import (
    Message,
    StoreOp,
)
from gateway.broker.session_info import SessionInfo
from gateway.mqtt.reason_codes import ReasonCode
from gateway.server.barrier import early_deliveries, needs_barrier
from gateway.server.connection import SLOW_CONSUMER_BYTES, Authenticates, MQTTConnection
from gateway.server.inprocess import open_in_process
from gateway.server.pending import PendingConnections, Verdict
from gateway.server.ratelog import RateLimitedLog
from gateway.server.socket_transport import SocketListener, listen_tcp
from gateway.server.sockets import bound_unix_socket, raise_open_files_limit
from gateway.server.timer_wheel import TimerWheel

if TYPE_CHECKING:
    from gateway.server.websocket import WebSocketLink

log = logging.getLogger(__name__)


class Listening(Protocol):
    """What the server does with a listener: asyncio.Server, or socket_transport's."""

    def is_serving(self) -> bool: ...

    async def start_serving(self) -> None: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class Committer(Protocol):
    def submit(self, ops: Sequence[StoreOp], *, urgent: bool = True) -> asyncio.Future[None]: ...


def _log_background_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("store commit of delivery progress failed: %s", future.exception())


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    name: str
    kind: str  # "tcp" | "tls" | "unix" | "ws" | "wss"
    host: str = "127.0.0.1"
    port: int = 0
    path: str = ""
    url_path: str = "/mqtt"  # ws, wss: the HTTP path of the WebSocket endpoint
    origins: tuple[str, ...] = ("*",)  # ws, wss: browser origins accepted, "*" = any
    allow_anonymous: bool = True
    ssl_context: ssl.SSLContext | None = None


@dataclass(slots=True)
class ServerStats:
    connections_refused: int = 0  # max_connections reached
    refused_pending_address: int = 0  # max_pending_per_address reached, and as many waiting
    refused_pending_total: int = 0  # max_pending_connections reached
    pending_waits: int = 0  # connections that had to wait for a turn of their address
    connect_timeouts: int = 0  # TLS handshake and CONNECT not done within connect_timeout
    tls_failures: int = 0  # handshakes that failed or that the peer gave up
    keepalive_timeouts: int = 0
    malformed_packets: int = 0
    dropped_slow_consumer: int = 0
    write_pauses: int = 0  # times a client's send buffer filled up and reading it stopped
    send_stalls: int = 0  # clients dropped for reading nothing for send_stall_timeout
    websocket_refused: int = 0  # HTTP requests on ws/wss listeners answered with an error
    websocket_bad_frames: int = 0  # closed for a text frame or a broken WebSocket frame


# Seconds past the connect timeout a CONNECT whose password check is under way may take before
# the connection is dropped anyway (the check itself answers "busy" at the connect timeout if
# it has not started; this only catches an authenticator that never returns).
AUTH_GRACE = 30.0


class Server:
    def __init__(
        self,
        broker: Broker,
        store: Committer,
        authenticator: Authenticates,
        listeners: Sequence[ListenerSpec],
        *,
        max_packet_size: int,
        topic_alias_maximum: int,
        connect_timeout: float = 10.0,
        max_connections: int = 0,
        max_pending_per_address: int = 32,
        max_pending_connections: int = 512,
        send_stall_timeout: float = 60.0,
        tick_interval: float = 1.0,
    ) -> None:
        self.broker = broker
        self.store = store
        self.authenticator = authenticator
        self.listener_specs = list(listeners)
        self.max_packet_size = max_packet_size
        self.topic_alias_maximum = topic_alias_maximum
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        # Accepted network connections without a CONNECT yet (TLS handshakes included).
        self._pending: PendingConnections[MQTTConnection] = PendingConnections(
            max_pending_per_address, max_pending_connections
        )
        self.send_stall_timeout = send_stall_timeout
        self.tick_interval = tick_interval
        self.stats = ServerStats()
        self.connections: dict[int, MQTTConnection] = {}
        # Connect and keep-alive deadlines; a tick takes out only those come due.
        self._timers: TimerWheel[MQTTConnection] = TimerWheel(granularity=tick_interval)
        # Connections not reading because their send buffer is full: few, checked every tick.
        self._stalled: set[MQTTConnection] = set()
        self.outside_connections = 0  # connections counted against max_connections
        self._log_refused = RateLimitedLog(log, logging.WARNING)
        self._log_timeout = RateLimitedLog(log, logging.INFO)
        self._log_tls = RateLimitedLog(log, logging.INFO)
        self._log_stall = RateLimitedLog(log, logging.WARNING)
        self._log_slow = RateLimitedLog(log, logging.WARNING)
        self._log_websocket = RateLimitedLog(log, logging.INFO)
        self.bound: list[tuple[ListenerSpec, str]] = []  # (spec, actual address)
        self._servers: list[Listening] = []
        self._next_conn_id = 0
        self._housekeeping: asyncio.Task[None] | None = None
        self._commits: set[asyncio.Future[None]] = set()
        self._dirty: dict[int, MQTTConnection] = {}
        self._flush_scheduled = False
        self.started_at = time.time()  # wall clock; set again when the listeners start

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, *, serve: bool = True) -> None:
        """Bind every listener (an address in use fails here, at once); accept clients now,
        or, with ``serve=False``, from `serve()` on: the gateway's own device sessions
        (in-process) can get ready first."""
        loop = asyncio.get_running_loop()
        websockets = any(spec.kind in ("ws", "wss") for spec in self.listener_specs)
        link_type = _websocket_link() if websockets else None
        before, after = raise_open_files_limit()
        if after != before:
            log.info("open-files limit raised from %d to %d (one per connection)", before, after)
        for spec in self.listener_specs:
            name, anon = spec.name, spec.allow_anonymous
            # TLS is started by the connection once the server admitted it (connection.py):
            # asyncio's TLS listener would allocate its buffers for every accepted socket.
            tls = spec.ssl_context if spec.kind in ("tls", "wss") else None

            def factory(
                name: str = name, anon: bool = anon, tls: ssl.SSLContext | None = tls
            ) -> MQTTConnection:
                return MQTTConnection(self, name, anon, tls)

            def ws_factory(
                name: str = name,
                anon: bool = anon,
                tls: ssl.SSLContext | None = tls,
                url_path: str = spec.url_path,
                origins: tuple[str, ...] = spec.origins,
            ) -> WebSocketLink:
                assert link_type is not None  # made only for ws/wss listeners
                return link_type(self, name, anon, url_path, tls, origins)

            protocol_factory: Callable[[], asyncio.Protocol] = (
                ws_factory if spec.kind in ("ws", "wss") else factory
            )
            srv, address = await _listen(spec, protocol_factory, serve)
            self.bound.append((spec, address))
            self._servers.append(srv)
            if serve:
                log.info("listening on %s (%s)", _shown(*self.bound[-1]), spec.name)
        self._housekeeping = loop.create_task(self._housekeep())
        self.started_at = time.time()

    async def serve(self) -> None:
        """Start accepting clients on the listeners `start(serve=False)` bound."""
        for srv, (spec, address) in zip(self._servers, self.bound, strict=True):
            if not srv.is_serving():
                await srv.start_serving()
                log.info("listening on %s (%s)", _shown(spec, address), spec.name)

    async def connect_in_process(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A trusted MQTT connection from inside the process (device sessions), as streams."""
        return await open_in_process(self)

    def port_of(self, listener_name: str) -> int:
        """The bound TCP port of a listener (useful with port 0)."""
        for spec, address in self.bound:
            if spec.name == listener_name:
                return int(address.rsplit(":", 1)[1])
        raise KeyError(listener_name)

    async def stop(self) -> None:
        """Stop accepting, tell clients, commit what is pending, close connections."""
        for srv in self._servers:
            srv.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            try:
                await self._housekeeping
            except asyncio.CancelledError:
                pass
        self.broker.shutdown(time.time())
        await self.apply_effects(self.broker.take_effects())
        if self._commits:
            await asyncio.gather(*self._commits, return_exceptions=True)
        for conn in list(self.connections.values()):
            conn.close()
        for srv in self._servers:
            await srv.wait_closed()
        for spec, address in self.bound:
            if spec.kind == "unix":
                try:
                    os.unlink(address)
                except OSError:
                    pass

    def set_auth(self, authenticator: Authenticates, authorizer: Authorizer) -> None:
        """Swap authentication and ACLs (configuration reload). Connected clients stay; the
        authorizer applies to their next message, the authenticator to the next CONNECT."""
        self.authenticator = authenticator
        self.broker.set_authorizer(authorizer)

    # --- admin ------------------------------------------------------------------------------
    # Thin wrappers for the admin API: the broker call at the current time, then its effects
    # performed like those of any packet. Call them on the event loop.

    def kick(self, client_id: str) -> bool:
        done = self.broker.kick(client_id, time.time())
        self.flush_effects()
        return done

    def delete_session(self, client_id: str) -> bool:
        done = self.broker.delete_session(client_id, time.time())
        self.flush_effects()
        return done

    def queue_entries(self, client_id: str) -> list[tuple[int, Message, bool]] | None:
        return self.broker.queue_entries(client_id)

    def cancel_queued(self, client_id: str, seqs: Collection[int] | None = None) -> list[int]:
        cancelled = self.broker.cancel_queued(client_id, seqs, time.time())
        self.flush_effects()
        return cancelled

    def versions(self) -> tuple[int, int]:
        return self.broker.versions()

    def events_since(self, seq: int) -> tuple[int, list[dict[str, object]]]:
        return self.broker.events_since(seq)

    def sessions_info(self) -> list[SessionInfo]:
        return self.broker.sessions_info()

    def stats_snapshot(self) -> dict[str, float | int]:
        """The broker's figures, plus the connection layer's and the store size if known."""
        snapshot = self.broker.stats_snapshot()
        snapshot["connections"] = len(self.connections)
        snapshot["uptime"] = round(time.time() - self.started_at, 3)
        snapshot["dropped_slow_consumer"] = self.stats.dropped_slow_consumer
        size = getattr(getattr(self.store, "stats", None), "size_bytes", None)
        if isinstance(size, int):
            snapshot["store_bytes"] = size
        return snapshot

    # --- connections ------------------------------------------------------------------------

    def next_conn_id(self) -> int:
        self._next_conn_id += 1
        return self._next_conn_id

    @property
    def max_pending_per_address(self) -> int:
        return self._pending.per_address

    @max_pending_per_address.setter
    def max_pending_per_address(self, value: int) -> None:
        self._pending.per_address = value

    @property
    def max_pending_connections(self) -> int:
        return self._pending.total

    @max_pending_connections.setter
    def max_pending_connections(self, value: int) -> None:
        self._pending.total = value

    @property
    def pending_connections(self) -> int:
        return self._pending.count

    def register(self, conn: MQTTConnection) -> bool:
        """Admit an outside connection as it is accepted, before any byte (or TLS buffer):
        within max_connections, and, for a network peer, within the caps on connections
        without a CONNECT yet (gateway/server/pending.py: it may have to wait for a turn,
        ``conn.waiting``). The gateway's own in-process clients register themselves and
        neither count nor get refused."""
        peer = conn.info.peer if conn.info is not None else "?"
        if self.max_connections and self.outside_connections >= self.max_connections:
            self.stats.connections_refused += 1
            self._log_refused(
                "refusing %s on %s: max_connections reached", peer, conn.listener_name
            )
            return False
        source = conn.source
        if source is not None:
            verdict = self._pending.arrive(source, conn)
            if verdict is Verdict.REFUSE_TOTAL:
                self.stats.refused_pending_total += 1
                self._log_refused(
                    "refusing %s on %s: %d connections without a CONNECT yet "
                    "(limits.max_pending_connections)",
                    peer,
                    conn.listener_name,
                    self.pending_connections,
                )
                return False
            if verdict is Verdict.REFUSE_ADDRESS:
                self.stats.refused_pending_address += 1
                self._log_refused(
                    "refusing %s on %s: %d connections from %s without a CONNECT yet, and "
                    "as many waiting for their turn (limits.max_pending_per_address)",
                    peer,
                    conn.listener_name,
                    self.max_pending_per_address,
                    source,
                )
                return False
            conn.pending = verdict is Verdict.START
            conn.waiting = verdict is Verdict.WAIT
            if conn.waiting:
                self.stats.pending_waits += 1
        self.connections[conn.conn_id] = conn
        self.outside_connections += 1
        self._timers.schedule(conn, conn.opened_at + self.connect_timeout)
        return True

    def register_trusted(self, conn: MQTTConnection) -> None:
        """Admit one of the gateway's own in-process clients: not subject to
        max_connections, which protects the gateway from outside clients (refusing its own
        devices would silently stop command delivery)."""
        self.connections[conn.conn_id] = conn
        self._timers.schedule(conn, conn.opened_at + self.connect_timeout)

    def connect_received(self, conn: MQTTConnection) -> None:
        """The connection sent its CONNECT (or went away): it no longer counts as pending
        (its password check, if any, is bounded by the authenticator's own limits), and the
        next connection waiting from its address gets its turn."""
        if conn.waiting:
            assert conn.source is not None
            conn.waiting = False
            self._pending.leave_queue(conn.source, conn)
            return
        if not conn.pending:
            return
        conn.pending = False
        assert conn.source is not None
        following = self._pending.done(conn.source)
        if following is not None:
            following.waiting = False
            following.pending = True
            following.take_turn()

    def unregister(self, conn: MQTTConnection) -> bool:
        if self.connections.pop(conn.conn_id, None) is None:
            return False
        self._timers.cancel(conn)
        self._stalled.discard(conn)
        self.connect_received(conn)
        if conn.info is None or not conn.info.trusted:
            self.outside_connections -= 1
        return True

    def dropped_for_slow_consumer(self, conn: MQTTConnection) -> None:
        self.stats.dropped_slow_consumer += 1
        self._log_slow(
            "dropping QoS 0 messages for %s (%s): more than %d bytes wait to be sent to it",
            conn.info.peer if conn.info is not None else "?",
            conn.listener_name,
            SLOW_CONSUMER_BYTES,
        )

    def connect_timed_out(self, conn: MQTTConnection) -> None:
        self.stats.connect_timeouts += 1
        self._log_timeout(
            "no TLS handshake and CONNECT within %g s from %s on %s",
            self.connect_timeout,
            conn.info.peer if conn.info is not None else "?",
            conn.listener_name,
        )

    def write_stalled(self, conn: MQTTConnection, stalled: bool) -> None:
        """The connection stopped reading for a full send buffer, or it drained: while it
        is stalled the send-stall clock, not the keep-alive, decides (housekeep_once)."""
        if stalled:
            self._stalled.add(conn)
        elif conn in self._stalled:
            self._stalled.discard(conn)
            self._schedule_keep_alive(conn)

    def _schedule_keep_alive(self, conn: MQTTConnection) -> None:
        if conn.keep_alive and not conn.closed:
            # MQTT 3.1.1 §3.1.2.10, 5.0 §3.1.2.10: one and a half keep-alive periods.
            self._timers.schedule(conn, conn.last_rx + 1.5 * conn.keep_alive)

    def tls_failed(self, conn: MQTTConnection, error: BaseException | None) -> None:
        self.stats.tls_failures += 1
        self._log_tls(
            "TLS handshake with %s on %s failed: %s",
            conn.info.peer if conn.info is not None else "?",
            conn.listener_name,
            error or "closed by the peer",
        )

    def websocket_refused(self, conn: MQTTConnection, status: int, reason: str) -> None:
        self.stats.websocket_refused += 1
        self._log_websocket(
            "refusing the HTTP request of %s on %s with %d: %s",
            conn.info.peer if conn.info is not None else "?",
            conn.listener_name,
            status,
            reason or "not a WebSocket upgrade",
        )

    def websocket_bad_frame(self, conn: MQTTConnection, what: str) -> None:
        self.stats.websocket_bad_frames += 1
        self._log_websocket(
            "closing %s (%s): %s",
            conn.info.peer if conn.info is not None else "?",
            conn.listener_name,
            what,
        )

    def guard_figures(self) -> list[tuple[str, str]]:
        """$SYS/broker/... topics (relative) and values of the limits this layer enforces."""
        s = self.stats
        return [
            ("connections/pending", str(self.pending_connections)),
            ("connections/refused/pending_per_address", str(s.refused_pending_address)),
            ("connections/refused/pending_total", str(s.refused_pending_total)),
            ("connections/pending_waits", str(s.pending_waits)),
            ("connections/tls_failures", str(s.tls_failures)),
            ("connections/write_pauses", str(s.write_pauses)),
            ("connections/send_stalls", str(s.send_stalls)),
            ("connections/websocket/refused", str(s.websocket_refused)),
            ("connections/websocket/bad_frames", str(s.websocket_bad_frames)),
        ]

    # --- effects ----------------------------------------------------------------------------

    def flush_if_relaxed(self, origin: MQTTConnection) -> bool:
        """Perform what the broker asked for so far if none of it must wait for the disk
        (False, and nothing done, if some of it must: a publisher's batch is committed
        whole)."""
        if needs_barrier(self.broker.pending_store_ops()):
            return False
        self.flush_effects(origin)
        return True

    def flush_effects(self, origin: MQTTConnection | None = None) -> None:
        """Perform what the broker asked for; wait for the store first if it must."""
        effects = self.broker.take_effects()
        if not effects.store:
            if effects.actions:
                self._perform(effects)
            return
        barrier = needs_barrier(effects.store)
        # Submitted now, so that store order = broker order; what nobody waits for may wait
        # for company (SqliteStore's relaxed window).
        durable = self.store.submit(effects.store, urgent=barrier)
        if not barrier:
            durable.add_done_callback(_log_background_failure)
            self._perform(effects)
            return
        if origin is not None:
            early, effects.actions = early_deliveries(effects.actions, origin.conn_id)
            if early:
                self._perform_actions(early)
            origin.mark_busy()
        # A callback, not a task awaiting the future: a task per commit cost its creation
        # and one more turn of the loop before the PUBACKs went out.
        self._commits.add(durable)
        durable.add_done_callback(partial(self._after_commit, effects, origin))

    def _after_commit(
        self, effects: Effects, origin: MQTTConnection | None, durable: asyncio.Future[None]
    ) -> None:
        self._commits.discard(durable)
        if durable.cancelled() or durable.exception() is not None:
            self._commit_failed(durable, effects, origin)
        else:
            self._perform(effects)
        if origin is not None:
            origin.continue_after_wait()

    async def apply_effects(self, effects: Effects, origin: MQTTConnection | None = None) -> None:
        if effects.store:
            durable = self.store.submit(effects.store)
            if not await self._durable(durable, effects, origin):
                return
        self._perform(effects)

    async def _durable(
        self, durable: asyncio.Future[None], effects: Effects, origin: MQTTConnection | None
    ) -> bool:
        try:
            await durable
            return True
        except Exception:
            self._commit_failed(durable, effects, origin)
            return False

    def _commit_failed(
        self, durable: asyncio.Future[None], effects: Effects, origin: MQTTConnection | None
    ) -> None:
        # Nothing that depended on this commit may be acknowledged. The originating client
        # is cut off so that it retransmits what it was not told is safe; deliveries to
        # others still go out (at-least-once allows the duplicate this may cause).
        cause = None if durable.cancelled() else durable.exception()
        log.error(
            "store commit failed; dropping the acknowledgements of this batch: %s",
            cause or "cancelled",
            exc_info=cause,
        )
        if origin is not None:
            origin.abort()  # closed connections drop what is queued for them
        self._perform(effects)

    def _perform(self, effects: Effects) -> None:
        self._perform_actions(effects.actions)

    def _perform_actions(self, actions: list[Action]) -> None:
        connections = self.connections
        dirty = self._dirty
        for action in actions:
            conn = connections.get(action.conn_id)
            if conn is None:
                continue
            if action.__class__ is Send:
                conn.queue(action.packet)
                dirty[action.conn_id] = conn
            elif isinstance(action, SetKeepAlive):
                conn.set_keep_alive(action.seconds)
                self._schedule_keep_alive(conn)
            else:  # Close
                conn.close()
        if dirty and not self._flush_scheduled:
            # One write per connection per event-loop turn, however many batches fed it.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_dirty)

    def _flush_dirty(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, {}
        for conn in dirty.values():
            conn.flush()

    # --- timers -----------------------------------------------------------------------------

    async def _housekeep(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            try:
                self.housekeep_once()
            except Exception:  # a bug here must not stop keep-alive checking for good
                log.exception("housekeeping failed")

    def housekeep_once(self) -> None:
        now_mono = time.monotonic()
        now = time.time()
        for conn in list(self._stalled):
            self._check_stall(conn, now_mono)
        for conn in self._timers.expire(now_mono):
            if not conn.closed:
                self._check_deadline(conn, now_mono, now)
        self.broker.tick(now)
        self.flush_effects()

    def _check_deadline(self, conn: MQTTConnection, now_mono: float, now: float) -> None:
        """A connection's slot in the timer wheel came due: act if its deadline has passed,
        else put it back for its true deadline (a keep-alive that packets refreshed)."""
        if not conn.connected:
            waited = now_mono - conn.opened_at
            if conn.authenticating and waited <= self.connect_timeout + AUTH_GRACE:
                # The authenticator answers by the connect timeout itself.
                self._timers.schedule(conn, conn.opened_at + self.connect_timeout + AUTH_GRACE)
            elif waited > self.connect_timeout:
                self.connect_timed_out(conn)
                conn.abort()
            else:
                self._timers.schedule(conn, conn.opened_at + self.connect_timeout)
        elif conn in self._stalled:
            pass  # write_stalled() schedules the keep-alive again when it drains
        elif conn.keep_alive:
            if now_mono - conn.last_rx > 1.5 * conn.keep_alive:
                self.stats.keepalive_timeouts += 1
                self.broker.protocol_violation(conn.conn_id, ReasonCode.KEEP_ALIVE_TIMEOUT, now)
            else:
                self._schedule_keep_alive(conn)

    def _check_stall(self, conn: MQTTConnection, now_mono: float) -> None:
        """Not reading while its send buffer is full: the keep-alive cannot tell (we are not
        reading it), the stall clock can. The gateway's own device sessions are never dropped
        for it: that would silently stop command delivery."""
        if conn.closed or not conn.connected or conn.stalled_since is None:
            return
        conn.check_progress(now_mono)
        trusted = conn.info is not None and conn.info.trusted
        if now_mono - conn.stalled_since > self.send_stall_timeout and not trusted:
            self.stats.send_stalls += 1
            self._log_stall(
                "dropping %s (%s): it has read nothing of what it was sent for %g s",
                conn.info.peer if conn.info is not None else "?",
                conn.listener_name,
                self.send_stall_timeout,
            )
            conn.abort()


async def _listen(
    spec: ListenerSpec, factory: Callable[[], asyncio.Protocol], serve: bool
) -> tuple[Listening, str]:
    """The bound listener of ``spec`` and the address it got."""
    if spec.kind == "unix":
        path = Path(spec.path)
        loop = asyncio.get_running_loop()
        unix = await loop.create_unix_server(
            factory, sock=bound_unix_socket(path), start_serving=serve
        )
        return unix, str(path)
    srv: asyncio.Server | SocketListener
    if spec.kind in ("tcp", "ws"):
        # Without TLS: a transport with a fraction of asyncio's state per connection
        # (socket_transport.py), for the thousands of idle clients a gateway holds.
        srv = await listen_tcp(spec.host, spec.port, factory, backlog=1024, start_serving=serve)
    else:
        srv = await asyncio.get_running_loop().create_server(
            factory, spec.host, spec.port, reuse_address=True, backlog=1024, start_serving=serve
        )
    sock = srv.sockets[0].getsockname()
    return srv, f"{sock[0]}:{sock[1]}"


def _websocket_link() -> type[WebSocketLink]:
    # Imported only for a ws/wss listener: the websockets package and what it pulls in cost
    # 2.3 MB of RSS that a gateway without one need not pay.
    from gateway.server.websocket import WebSocketLink

    return WebSocketLink


def _shown(spec: ListenerSpec, address: str) -> str:
    """A listener's address as a client would write it (a URL for WebSocket listeners)."""
    if spec.kind in ("ws", "wss"):
        return f"{spec.kind}://{address}{spec.url_path}"
    return address
