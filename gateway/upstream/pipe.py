"""The forwarding between one local link and one upstream link, packet by packet (sans-I/O).

Packet ids are shared, never translated: a local message with packet id L goes up with packet
id L, an upstream message with packet id U is published locally with packet id U. Each side's
persistent session therefore recognises what the other side resends after a reconnect or a
crash, and each acknowledgement is passed on only when the far side has acknowledged:

    out, QoS 1: local PUBLISH(L) -> up PUBLISH(L) -> up PUBACK(L) -> local PUBACK(L)
    out, QoS 2: local PUBLISH(L) -> up PUBLISH(L) -> up PUBREC(L) -> local PUBREC(L)
                -> local PUBREL(L) -> up PUBREL(L) -> up PUBCOMP(L) -> local PUBCOMP(L)
    in:         the same with the sides swapped (U instead of L)

So a message leaves the local queue only once the upstream has it, and the upstream's only once
it is committed locally. When the forwarded QoS is lower than the one received (the rule's QoS,
or what the upstream supports), the bridge finishes the higher-QoS exchange on its own side once
the lower one is done.

Nothing here does I/O: packets come in through :meth:`Pipe.from_local` and
:meth:`Pipe.from_remote`, and go out through the two callables given to the constructor.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from gateway.mqtt.codec import publish_size
from gateway.mqtt.packets import (
    NO_PROPERTIES,
    PROTOCOL_V5,
    Packet,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    new_publish,
)
from gateway.mqtt.reason_codes import ReasonCode
from gateway.upstream.ratelog import RateLimitedLog
from gateway.upstream.rules import TopicMap

log = logging.getLogger("gateway.upstream")

_PID_NOT_FOUND = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND.value
_QUOTA_EXCEEDED = ReasonCode.QUOTA_EXCEEDED.value

# Outgoing (local -> upstream) exchange states, by packet id.
OUT_Q1 = 1  # sent up at QoS 1 for a local QoS 1 message: PUBACK -> local PUBACK
OUT_Q1_OF_Q2 = 2  # sent up at QoS 1 for a local QoS 2 message: PUBACK -> local PUBREC
OUT_Q2 = 3  # sent up at QoS 2, waiting for PUBREC
OUT_Q2_REC = 4  # upstream PUBREC passed on as local PUBREC, waiting for the local PUBREL
OUT_Q2_REL = 5  # PUBREL sent up, waiting for PUBCOMP

# Incoming (upstream -> local) exchange states, by packet id.
IN_Q1 = 1  # published locally at QoS 1 for an upstream QoS 1 message: PUBACK -> up PUBACK
IN_Q1_OF_Q2 = 2  # published locally at QoS 1 for an upstream QoS 2 message: -> up PUBREC
IN_Q2 = 3  # published locally at QoS 2, waiting for the local PUBREC
IN_Q2_REC = 4  # local PUBREC passed on upstream, waiting for the upstream PUBREL
IN_Q2_REL = 5  # PUBREL passed on locally, waiting for the local PUBCOMP

# Packets that arrive before the pipe starts (the upstream sends its queue right after its
# CONNACK, the local broker right after ours) wait; QoS 0 ones beyond this are dropped.
_EARLY_QOS0_LIMIT = 10_000
_TOPIC_CACHE_SIZE = 4096


class _RouteCache:
    """A topic's route, looked up once: a stream repeats few topics, and matching every rule
    per message would cost more than forwarding it."""

    __slots__ = ("_cache", "_lookup")

    def __init__(self, lookup: Callable[[str], tuple[str, int] | None]) -> None:
        self._lookup = lookup
        self._cache: dict[str, tuple[str, int] | None] = {}

    def get(self, topic: str) -> tuple[str, int] | None:
        cache = self._cache
        try:
            return cache[topic]
        except KeyError:
            pass
        if len(cache) >= _TOPIC_CACHE_SIZE:  # bounded: a client can publish on endless topics
            cache.clear()
        route = cache[topic] = self._lookup(topic)
        return route


@dataclass(slots=True)
class PipeCounters:
    """Running totals of one bridge, over all its links."""

    forwarded: int = 0  # out: acknowledged by the upstream (QoS 0: written)
    received: int = 0  # in: committed locally (QoS 0: written)
    duplicates: int = 0  # out: QoS 1 sent up again with DUP (a redelivery)
    refused_out: int = 0  # out: the upstream refused it (reason code >= 0x80), or too large
    refused_in: int = 0  # in: the local broker refused it, too large, or no rule maps it
    unmapped_out: int = 0  # out: delivered to the bridge but no rule maps its topic
    dropped_qos0: int = 0  # either way: QoS 0 while the receiving side did not keep up


def _never() -> bool:
    return False


class Pipe:
    """The two-way forwarding of one pair of links (one connection to each side)."""

    def __init__(
        self,
        topics: TopicMap,
        send_remote: Callable[[Packet], None],
        send_local: Callable[[Packet], None],
        *,
        counters: PipeCounters,
        remote_version: int,
        remote_quota: int,
        local_quota: int,
        remote_max_qos: int = 2,
        remote_retain: bool = True,
        remote_max_packet_size: int = 0,
        local_max_packet_size: int = 0,
        warn: RateLimitedLog | None = None,
        name: str = "",
        on_retry_later: Callable[[str], None] | None = None,
        remote_congested: Callable[[], bool] = _never,
        local_congested: Callable[[], bool] = _never,
    ) -> None:
        self._up = send_remote
        self._down = send_local
        self.counters = counters
        self._remote_v5 = remote_version == PROTOCOL_V5
        self._remote_version = remote_version
        self._remote_quota = max(1, remote_quota)
        self._local_quota = max(1, local_quota)
        self._remote_max_qos = remote_max_qos
        self._remote_retain = remote_retain
        self._remote_max_packet = remote_max_packet_size
        self._local_max_packet = local_max_packet_size
        self._warn = warn if warn is not None else RateLimitedLog(log)
        # QoS 0 is not flow-controlled: towards a peer that stopped reading, it would pile up
        # in our write buffer without end. It is dropped instead while that buffer is full.
        self._remote_congested = remote_congested
        self._retry_later = on_retry_later
        self._local_congested = local_congested
        self.name = name
        self.started = False
        self.forwarding = True  # False while stopping: nothing new goes up
        self._out: dict[int, int] = {}
        self._held: deque[tuple[int, int, Publish]] = deque()
        self._local_rel_ours: set[int] = set()  # local PUBRELs the bridge answers itself
        self._in: dict[int, int] = {}
        self._in_held: deque[tuple[int, int, Publish]] = deque()
        self._up_rel_ours: set[int] = set()  # upstream PUBRELs the bridge answers itself
        self._early_local: list[Packet] = []
        self._early_remote: list[Packet] = []
        self._early_qos0 = 0
        self._remote_routes = _RouteCache(topics.to_remote)
        self._local_routes = _RouteCache(topics.to_local)

    # --- figures ----------------------------------------------------------------------------

    @property
    def out_in_flight(self) -> int:
        """Messages sent up and not yet acknowledged, plus those held for upstream quota."""
        return len(self._out) + len(self._held)

    def out_packet_ids(self) -> set[int]:
        return set(self._out) | {pid for pid, _, _ in self._held}

    # --- start ------------------------------------------------------------------------------

    def start(self) -> None:
        """Begin forwarding, with whatever arrived from either side meanwhile."""
        self.started = True
        early_remote, self._early_remote = self._early_remote, []
        early_local, self._early_local = self._early_local, []
        for packet in early_remote:
            self.from_remote(packet)
        for packet in early_local:
            self.from_local(packet)

    def _keep_early(self, early: list[Packet], packet: Packet) -> None:
        if isinstance(packet, Publish) and packet.qos == 0:
            if self._early_qos0 >= _EARLY_QOS0_LIMIT:
                self._warn.warning(
                    "early-qos0", "upstream %s: QoS 0 message dropped while connecting", self.name
                )
                return
            self._early_qos0 += 1
        early.append(packet)

    # --- local -> upstream ------------------------------------------------------------------

    def from_local(self, packet: Packet) -> None:
        if not self.started:
            self._keep_early(self._early_local, packet)
            return
        if isinstance(packet, Publish):
            self._local_publish(packet)
        elif isinstance(packet, PubAck):
            self._local_puback(packet)
        elif isinstance(packet, PubRel):
            self._local_pubrel(packet.packet_id)
        elif isinstance(packet, PubRec):
            self._local_pubrec(packet)
        elif isinstance(packet, PubComp):
            self._local_pubcomp(packet.packet_id)
        # Anything else (SUBACK of the bridge's own subscribe ...) is not the pipe's.

    def _local_publish(self, p: Publish) -> None:
        pid = p.packet_id
        qos = p.qos
        route = self._remote_routes.get(p.topic)
        if route is None:
            self.counters.unmapped_out += 1
            self._warn.warning(
                "unmapped-out",
                "upstream %s: no topic rule maps local %r; acknowledged, not forwarded",
                self.name,
                p.topic,
            )
            self._finish_local(pid, qos)
            return
        topic, rule_qos = route
        up_qos = min(qos, rule_qos, self._remote_max_qos)
        props = p.properties
        if props is not NO_PROPERTIES and (
            props.subscription_identifiers or props.topic_alias is not None
        ):
            props = replace(props, subscription_identifiers=(), topic_alias=None)
        up = new_publish(
            topic,
            p.payload,
            up_qos,
            p.retain and self._remote_retain,
            p.dup and up_qos > 0,
            pid if up_qos else None,
            props if self._remote_v5 else NO_PROPERTIES,
        )
        limit = self._remote_max_packet
        if limit and publish_size(up, self._remote_version) > limit:
            self.counters.refused_out += 1
            self._warn.warning(
                "too-large-out",
                "upstream %s: message on %r is larger than the upstream's maximum packet "
                "size (%d bytes); not forwarded",
                self.name,
                p.topic,
                limit,
            )
            self._finish_local(pid, qos)
            return
        if not up_qos:
            if self._remote_congested():
                self._congested_drop(p.topic, "upstream")
            else:
                self._up(up)
                self.counters.forwarded += 1
            self._finish_local(pid, qos)
            return
        assert pid is not None
        state = OUT_Q2 if up_qos == 2 else OUT_Q1 if qos == 1 else OUT_Q1_OF_Q2
        if self._held or len(self._out) >= self._remote_quota or not self.forwarding:
            self._held.append((pid, state, up))
            return
        self._send_up(pid, state, up)

    def _congested_drop(self, topic: str, towards: str) -> None:
        self.counters.dropped_qos0 += 1
        self._warn.warning(
            "congested-" + towards,
            "upstream %s: the %s does not keep up; QoS 0 message on %r dropped",
            self.name,
            towards,
            topic,
        )

    def _send_up(self, pid: int, state: int, up: Publish) -> None:
        self._out[pid] = state
        if up.dup and up.qos == 1:
            self.counters.duplicates += 1
        self._up(up)

    def _release_held(self) -> None:
        held = self._held
        out = self._out
        quota = self._remote_quota
        while held and len(out) < quota and self.forwarding:
            pid, state, up = held.popleft()
            self._send_up(pid, state, up)

    def _finish_local(self, pid: int | None, qos: int) -> None:
        """Complete a local delivery the upstream will not acknowledge."""
        if pid is None or qos == 0:
            return
        if qos == 1:
            self._down(PubAck(pid))
        else:
            self._local_rel_ours.add(pid)
            self._down(PubRec(pid))

    def _upstream_busy(self, pid: int, reason_code: int) -> bool:
        """Quota exceeded: the upstream could not take it now, which is no reason to drop
        it. It stays in flight here (unacknowledged locally) until the link is replaced."""
        if reason_code != _QUOTA_EXCEEDED or pid not in self._out or self._retry_later is None:
            return False
        self.forwarding = False
        self._retry_later(f"the upstream is over its quota (0x97) for packet id {pid}")
        return True

    def _remote_puback(self, pid: int, reason_code: int) -> None:
        if reason_code >= 0x80 and self._upstream_busy(pid, reason_code):
            return
        state = self._out.pop(pid, None)
        if state is None:
            return  # unknown (the exchange ended on a previous link): nothing to pass on
        if reason_code >= 0x80:
            self._refused_out(pid, reason_code)
        else:
            self.counters.forwarded += 1
        if state == OUT_Q1:
            self._down(PubAck(pid))
        elif state == OUT_Q1_OF_Q2:
            self._local_rel_ours.add(pid)
            self._down(PubRec(pid))
        else:
            self._out[pid] = state  # a PUBACK for a QoS 2 exchange: not ours to end
            return
        if self._held:
            self._release_held()

    def _refused_out(self, pid: int, reason_code: int) -> None:
        self.counters.refused_out += 1
        self._warn.warning(
            "refused-out",
            "upstream %s refused a message (packet id %d, reason code 0x%02X); it is "
            "taken off the local queue",
            self.name,
            pid,
            reason_code,
        )

    def _remote_pubrec(self, pid: int, reason_code: int) -> None:
        state = self._out.get(pid)
        if state == OUT_Q2:
            if reason_code >= 0x80 and self._upstream_busy(pid, reason_code):
                return
            if reason_code >= 0x80:
                del self._out[pid]
                self._refused_out(pid, reason_code)
                self._local_rel_ours.add(pid)
                self._down(PubRec(pid))
                if self._held:
                    self._release_held()
                return
            self._out[pid] = OUT_Q2_REC
            self.counters.forwarded += 1
            self._down(PubRec(pid))
        elif state == OUT_Q2_REL:
            self._up(PubRel(pid))  # a PUBREC again: our PUBREL may not have arrived
        elif state is None:
            self._up(PubRel(pid, _PID_NOT_FOUND if self._remote_v5 else 0))

    def _local_pubrel(self, pid: int) -> None:
        ours = self._local_rel_ours
        if pid in ours:
            ours.discard(pid)
            self._down(PubComp(pid))
            return
        state = self._out.get(pid)
        if state is None or state in (OUT_Q2_REC, OUT_Q2_REL):
            # None: the local broker resends the PUBREL of an exchange from before a
            # reconnect or a restart; the upstream holds its half, so pass it on.
            self._out[pid] = OUT_Q2_REL
            self._up(PubRel(pid))
        else:
            self._down(PubComp(pid, _PID_NOT_FOUND))

    def _remote_pubcomp(self, pid: int) -> None:
        if self._out.get(pid) == OUT_Q2_REL:
            del self._out[pid]
            self._down(PubComp(pid))
            if self._held:
                self._release_held()

    # --- upstream -> local ------------------------------------------------------------------

    def from_remote(self, packet: Packet) -> None:
        if not self.started:
            self._keep_early(self._early_remote, packet)
            return
        if isinstance(packet, PubAck):
            self._remote_puback(packet.packet_id, packet.reason_code)
        elif isinstance(packet, Publish):
            self._remote_publish(packet)
        elif isinstance(packet, PubRec):
            self._remote_pubrec(packet.packet_id, packet.reason_code)
        elif isinstance(packet, PubComp):
            self._remote_pubcomp(packet.packet_id)
        elif isinstance(packet, PubRel):
            self._remote_pubrel(packet.packet_id)

    def _remote_publish(self, p: Publish) -> None:
        pid = p.packet_id
        qos = p.qos
        route = self._local_routes.get(p.topic)
        if route is None:
            self.counters.refused_in += 1
            self._warn.warning(
                "unmapped-in",
                "upstream %s: no topic rule brings %r in (or it names one of the gateway's "
                "own topics); acknowledged and dropped",
                self.name,
                p.topic,
            )
            self._finish_remote(pid, qos)
            return
        topic, rule_qos = route
        local_qos = min(qos, rule_qos)
        down = _local_copy(p, topic, local_qos)
        if self._too_large_for_local(down, p.topic):
            self._finish_remote(pid, qos)
            return
        if not local_qos:
            if self._local_congested():
                self._congested_drop(p.topic, "local broker")
            else:
                self._down(down)
                self.counters.received += 1
            self._finish_remote(pid, qos)
            return
        assert pid is not None
        state = self._in.get(pid)
        if state is not None:
            # The upstream sent this packet id again before we acknowledged it: the local
            # exchange under way answers for both.
            if state == IN_Q2_REC:
                self._up(PubRec(pid))
            return
        state = IN_Q2 if local_qos == 2 else IN_Q1 if qos == 1 else IN_Q1_OF_Q2
        if self._in_held or len(self._in) >= self._local_quota:
            self._in_held.append((pid, state, down))
            return
        self._in[pid] = state
        self._down(down)

    def _too_large_for_local(self, down: Publish, remote_topic: str) -> bool:
        limit = self._local_max_packet
        if not limit or publish_size(down, PROTOCOL_V5) <= limit:
            return False
        self.counters.refused_in += 1
        self._warn.warning(
            "too-large-in",
            "upstream %s: message on %r is larger than the local maximum packet size "
            "(%d bytes); acknowledged and dropped",
            self.name,
            remote_topic,
            limit,
        )
        return True

    def _release_in_held(self) -> None:
        held = self._in_held
        inflight = self._in
        quota = self._local_quota
        while held and len(inflight) < quota:
            pid, state, down = held.popleft()
            inflight[pid] = state
            self._down(down)

    def _finish_remote(self, pid: int | None, qos: int) -> None:
        """Complete an upstream delivery that no local exchange will acknowledge."""
        if pid is None or qos == 0:
            return
        if qos == 1:
            self._up(PubAck(pid))
        else:
            self._up_rel_ours.add(pid)
            self._up(PubRec(pid))

    def _ack_code(self, reason_code: int) -> int:
        return reason_code if self._remote_v5 else 0

    def _refused_in(self, pid: int, reason_code: int) -> None:
        self.counters.refused_in += 1
        self._warn.warning(
            "refused-in",
            "upstream %s: the local broker refused an incoming message (packet id %d, "
            "reason code 0x%02X)",
            self.name,
            pid,
            reason_code,
        )

    def _local_puback(self, p: PubAck) -> None:
        pid = p.packet_id
        state = self._in.pop(pid, None)
        if state is None:
            return
        rc = p.reason_code
        if rc >= 0x80:
            self._refused_in(pid, rc)
        else:
            self.counters.received += 1
        if state == IN_Q1:
            self._up(PubAck(pid, self._ack_code(rc)))
        elif state == IN_Q1_OF_Q2:
            if rc < 0x80 or not self._remote_v5:
                self._up_rel_ours.add(pid)
            self._up(PubRec(pid, self._ack_code(rc)))
        else:
            self._in[pid] = state
            return
        if self._in_held:
            self._release_in_held()

    def _local_pubrec(self, p: PubRec) -> None:
        pid = p.packet_id
        if self._in.get(pid) != IN_Q2:
            return
        rc = p.reason_code
        if rc >= 0x80:
            # The local exchange is over. An MQTT 5 upstream ends its own on this PUBREC; a
            # 3.1.1 one cannot be told and sends PUBREL, which we then answer ourselves.
            del self._in[pid]
            self._refused_in(pid, rc)
            if not self._remote_v5:
                self._up_rel_ours.add(pid)
            self._up(PubRec(pid, self._ack_code(rc)))
            if self._in_held:
                self._release_in_held()
            return
        self._in[pid] = IN_Q2_REC
        self.counters.received += 1
        self._up(PubRec(pid))

    def _remote_pubrel(self, pid: int) -> None:
        ours = self._up_rel_ours
        if pid in ours:
            ours.discard(pid)
            self._up(PubComp(pid))
            return
        state = self._in.get(pid)
        if state is None or state in (IN_Q2_REC, IN_Q2_REL):
            # None: the upstream resends the PUBREL of an exchange from before a reconnect
            # or a restart; the local broker holds its half (or answers "not found").
            self._in[pid] = IN_Q2_REL
            self._down(PubRel(pid))
        else:
            self._up(PubComp(pid, _PID_NOT_FOUND if self._remote_v5 else 0))

    def _local_pubcomp(self, pid: int) -> None:
        if self._in.get(pid) == IN_Q2_REL:
            del self._in[pid]
            self._up(PubComp(pid))
            if self._in_held:
                self._release_in_held()


def _local_copy(p: Publish, topic: str, qos: int) -> Publish:
    """An upstream PUBLISH as it goes down: the local topic and QoS; subscription
    identifiers and topic aliases belong to the upstream connection and are dropped."""
    props = p.properties
    if props is not NO_PROPERTIES and (
        props.subscription_identifiers or props.topic_alias is not None
    ):
        props = replace(props, subscription_identifiers=(), topic_alias=None)
    return new_publish(
        topic, p.payload, qos, p.retain, p.dup and qos > 0, p.packet_id if qos else None, props
    )
