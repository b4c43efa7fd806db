"""The bridge's forwarding (gateway/upstream/pipe.py) packet by packet, without sockets: packet
ids shared by both sides, acknowledgements passed on only once the far side acknowledged,
the upstream's receive maximum, QoS downgrades, and messages no rule takes."""

from __future__ import annotations

import pytest

from gateway.mqtt.packets import (
    PROTOCOL_V5,
    PROTOCOL_V311,
    Packet,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
)
from gateway.upstream.pipe import Pipe, PipeCounters
from gateway.upstream.rules import TopicMap
from gateway.upstream.settings import TopicRule

RULES = (
    TopicRule("#", "out", 2, "gw/", "site1/gw/"),
    TopicRule("+/set", "in", 2, "gw/", "site1/gw/"),
    TopicRule("q1/#", "in", 1, "gw/", "site1/gw/"),
)


class Sides:
    def __init__(self, **kwargs: object) -> None:
        self.up: list[Packet] = []
        self.down: list[Packet] = []
        self.counters = PipeCounters()
        options: dict[str, object] = {
            "remote_version": PROTOCOL_V5,
            "remote_quota": 20,
            "local_quota": 100,
        }
        options.update(kwargs)
        self.pipe = Pipe(
            TopicMap(RULES, "gw"),
            self.up.append,
            self.down.append,
            counters=self.counters,
            name="test",
            **options,  # type: ignore[arg-type]
        )
        self.pipe.start()

    def take_up(self) -> list[Packet]:
        out, self.up[:] = list(self.up), []
        return out

    def take_down(self) -> list[Packet]:
        out, self.down[:] = list(self.down), []
        return out


def local_msg(pid: int, topic: str = "gw/t/state", qos: int = 1, dup: bool = False) -> Publish:
    return Publish(topic, b"x%d" % pid, qos, False, dup, pid)


def test_qos1_goes_up_with_the_local_packet_id_and_is_acked_locally_only_after_upstream() -> None:
    s = Sides()
    s.pipe.from_local(local_msg(4711))
    (up,) = s.take_up()
    assert isinstance(up, Publish)
    assert (up.topic, up.packet_id, up.qos) == ("site1/gw/t/state", 4711, 1)
    assert s.take_down() == []  # nothing acknowledged locally yet
    s.pipe.from_remote(PubAck(4711))
    assert s.take_down() == [PubAck(4711)]
    assert s.counters.forwarded == 1


def test_qos2_out_sequence_passes_each_step_through_with_the_same_id() -> None:
    s = Sides()
    s.pipe.from_local(local_msg(9, qos=2))
    (up,) = s.take_up()
    assert isinstance(up, Publish) and (up.packet_id, up.qos) == (9, 2)
    s.pipe.from_remote(PubRec(9))
    assert s.take_down() == [PubRec(9)]
    s.pipe.from_local(PubRel(9))
    assert s.take_up() == [PubRel(9)]
    assert s.take_down() == []
    s.pipe.from_remote(PubComp(9))
    assert s.take_down() == [PubComp(9)]
    assert s.pipe.out_in_flight == 0


def test_a_pubrel_the_local_broker_resends_after_a_restart_goes_up() -> None:
    """After a crash the bridge knows nothing, but the local session resends PUBREL(L): the
    upstream's half of the exchange is completed with the same id."""
    s = Sides()
    s.pipe.from_local(PubRel(321))
    assert s.take_up() == [PubRel(321)]
    s.pipe.from_remote(PubComp(321))
    assert s.take_down() == [PubComp(321)]


def test_redelivery_with_dup_goes_up_with_dup_and_is_counted() -> None:
    s = Sides()
    s.pipe.from_local(local_msg(5, dup=True))
    (up,) = s.take_up()
    assert isinstance(up, Publish) and up.dup and up.packet_id == 5
    assert s.counters.duplicates == 1


def test_upstream_receive_maximum_holds_the_rest_in_order() -> None:
    s = Sides(remote_quota=3)
    for pid in range(1, 8):
        s.pipe.from_local(local_msg(pid))
    assert [p.packet_id for p in s.take_up()] == [1, 2, 3]  # type: ignore[union-attr]
    assert s.pipe.out_in_flight == 7
    s.pipe.from_remote(PubAck(2))
    assert [p.packet_id for p in s.take_up()] == [4]  # type: ignore[union-attr]
    for pid in (1, 3, 4):
        s.pipe.from_remote(PubAck(pid))
    assert [p.packet_id for p in s.take_up()] == [5, 6, 7]  # type: ignore[union-attr]


def test_qos_is_lowered_to_what_the_upstream_supports_and_finished_locally() -> None:
    s = Sides(remote_max_qos=1)
    s.pipe.from_local(local_msg(7, qos=2))
    (up,) = s.take_up()
    assert isinstance(up, Publish) and up.qos == 1
    s.pipe.from_remote(PubAck(7))
    assert s.take_down() == [PubRec(7)]
    s.pipe.from_local(PubRel(7))
    assert s.take_down() == [PubComp(7)]
    assert s.take_up() == []  # the upstream's QoS 1 exchange was over at its PUBACK


def test_a_local_message_no_rule_maps_is_acknowledged_and_counted_not_forwarded() -> None:
    s = Sides()
    s.pipe.from_local(local_msg(3, topic="gw"))  # "gw/#" matches "gw" itself; no rule does
    assert s.take_up() == []
    assert s.take_down() == [PubAck(3)]
    assert s.counters.unmapped_out == 1


def test_upstream_refusal_takes_the_message_off_the_local_queue_and_counts_it() -> None:
    s = Sides()
    s.pipe.from_local(local_msg(11))
    s.take_up()
    s.pipe.from_remote(PubAck(11, 0x87))
    assert s.take_down() == [PubAck(11)]
    assert (s.counters.refused_out, s.counters.forwarded) == (1, 0)


def test_too_large_for_the_upstream_is_not_sent() -> None:
    s = Sides(remote_max_packet_size=64)
    s.pipe.from_local(Publish("gw/big", b"x" * 100, 1, False, False, 1))
    assert s.take_up() == []
    assert s.take_down() == [PubAck(1)]
    assert s.counters.refused_out == 1


def test_retain_and_properties_are_kept_for_mqtt5_and_dropped_for_311() -> None:
    props = Properties(content_type="application/json", subscription_identifiers=(3,))
    for version, expect in ((PROTOCOL_V5, "application/json"), (PROTOCOL_V311, None)):
        s = Sides(remote_version=version)
        s.pipe.from_local(Publish("gw/a", b"{}", 1, True, False, 1, props))
        (up,) = s.take_up()
        assert isinstance(up, Publish) and up.retain
        assert up.properties.content_type == expect
        assert up.properties.subscription_identifiers == ()


def test_in_qos1_is_published_locally_with_the_upstream_id_and_acked_up_after_commit() -> None:
    s = Sides()
    s.pipe.from_remote(Publish("site1/gw/thermo/set", b'{"t":21}', 1, False, False, 777))
    (down,) = s.take_down()
    assert isinstance(down, Publish)
    assert (down.topic, down.packet_id, down.qos) == ("gw/thermo/set", 777, 1)
    assert s.take_up() == []
    s.pipe.from_local(PubAck(777))
    assert s.take_up() == [PubAck(777)]
    assert s.counters.received == 1


def test_in_qos2_sequence_and_a_resent_pubrel_after_reconnect() -> None:
    s = Sides()
    s.pipe.from_remote(Publish("site1/gw/thermo/set", b"{}", 2, False, False, 12))
    assert [type(p) for p in s.take_down()] == [Publish]
    s.pipe.from_local(PubRec(12))
    assert s.take_up() == [PubRec(12)]
    s.pipe.from_remote(PubRel(12))
    assert s.take_down() == [PubRel(12)]
    s.pipe.from_local(PubComp(12))
    assert s.take_up() == [PubComp(12)]
    # A new link: the upstream resends PUBREL of an exchange this pipe never saw.
    s2 = Sides()
    s2.pipe.from_remote(PubRel(40))
    assert s2.take_down() == [PubRel(40)]
    s2.pipe.from_local(PubComp(40, 0x92))
    assert s2.take_up() == [PubComp(40)]


def test_in_qos2_lowered_by_the_rule_is_finished_upstream_by_the_bridge() -> None:
    s = Sides()
    s.pipe.from_remote(Publish("site1/gw/q1/x", b"v", 2, False, False, 8))
    (down,) = s.take_down()
    assert isinstance(down, Publish) and down.qos == 1
    s.pipe.from_local(PubAck(8))
    assert s.take_up() == [PubRec(8)]
    s.pipe.from_remote(PubRel(8))
    assert s.take_up() == [PubComp(8)]
    assert s.take_down() == []


@pytest.mark.parametrize(
    "topic",
    [
        "site1/gw/bridge/request/kick/set",  # no in rule maps it (only +/set and q1/#)
        "site1/other/x/set",
    ],
)
def test_an_upstream_message_no_rule_takes_is_acked_up_and_dropped(topic: str) -> None:
    s = Sides()
    s.pipe.from_remote(Publish(topic, b"x", 1, False, False, 2))
    assert s.take_down() == []
    assert s.take_up() == [PubAck(2)]
    assert s.counters.refused_in == 1


def test_the_gateways_own_topics_cannot_be_reached_from_upstream() -> None:
    rules = (TopicRule("#", "in", 1, "gw/", "site1/gw/"),)
    up: list[Packet] = []
    down: list[Packet] = []
    pipe = Pipe(
        TopicMap(rules, "gw"),
        up.append,
        down.append,
        counters=PipeCounters(),
        remote_version=PROTOCOL_V5,
        remote_quota=10,
        local_quota=10,
    )
    pipe.start()
    pipe.from_remote(Publish("site1/gw/bridge/request/delete_session", b"{}", 1, False, False, 1))
    assert down == []
    assert up == [PubAck(1)]


def test_local_refusal_is_told_to_an_mqtt5_upstream() -> None:
    s = Sides()
    s.pipe.from_remote(Publish("site1/gw/a/set", b"x", 1, False, False, 3))
    s.take_down()
    s.pipe.from_local(PubAck(3, 0x97))
    assert s.take_up() == [PubAck(3, 0x97)]
    assert s.counters.refused_in == 1


def test_too_large_for_the_local_broker_is_acked_up_and_dropped() -> None:
    s = Sides(local_max_packet_size=100)
    s.pipe.from_remote(Publish("site1/gw/a/set", b"x" * 200, 1, False, False, 3))
    assert s.take_down() == []
    assert s.take_up() == [PubAck(3)]


def test_local_receive_maximum_holds_incoming_messages_in_order() -> None:
    s = Sides(local_quota=2)
    for pid in (1, 2, 3, 4):
        s.pipe.from_remote(Publish("site1/gw/a/set", b"%d" % pid, 1, False, False, pid))
    assert [p.packet_id for p in s.take_down()] == [1, 2]  # type: ignore[union-attr]
    s.pipe.from_local(PubAck(1))
    assert [p.packet_id for p in s.take_down()] == [3]  # type: ignore[union-attr]


def test_packets_before_start_wait_for_it() -> None:
    up: list[Packet] = []
    down: list[Packet] = []
    pipe = Pipe(
        TopicMap(RULES, "gw"),
        up.append,
        down.append,
        counters=PipeCounters(),
        remote_version=PROTOCOL_V5,
        remote_quota=10,
        local_quota=10,
    )
    pipe.from_local(local_msg(1))
    pipe.from_remote(Publish("site1/gw/a/set", b"x", 1, False, False, 9))
    assert up == [] and down == []
    pipe.start()
    assert [type(p) for p in up] == [Publish]
    assert [type(p) for p in down] == [Publish]


def test_nothing_new_goes_up_while_stopping() -> None:
    s = Sides()
    s.pipe.forwarding = False
    s.pipe.from_local(local_msg(1))
    assert s.take_up() == []
    assert s.pipe.out_packet_ids() == {1}


def test_qos0_is_dropped_not_buffered_while_the_receiving_side_does_not_read() -> None:
    congested = [False]
    s = Sides(remote_congested=lambda: congested[0], local_congested=lambda: congested[0])
    s.pipe.from_local(Publish("gw/a", b"1", 0))
    s.pipe.from_remote(Publish("site1/gw/a/set", b"1", 0))
    assert len(s.take_up()) == 1 and len(s.take_down()) == 1
    congested[0] = True
    s.pipe.from_local(Publish("gw/a", b"2", 0))
    s.pipe.from_remote(Publish("site1/gw/a/set", b"2", 0))
    s.pipe.from_local(local_msg(3))  # QoS 1 is flow-controlled: never dropped for this
    assert [p.qos for p in s.take_up()] == [1]  # type: ignore[union-attr]
    assert s.take_down() == []
    assert s.counters.dropped_qos0 == 2


@pytest.mark.parametrize("qos", [1, 2])
def test_quota_exceeded_upstream_is_retried_on_a_new_link_not_dropped(qos: int) -> None:
    """Mosquitto answers 0x97 when its receive maximum is taken (e.g. by our own unfinished
    QoS 2 exchanges after a reconnect): the message must stay queued locally."""
    retries: list[str] = []
    s = Sides(on_retry_later=retries.append)
    s.pipe.from_local(local_msg(6, qos=qos))
    s.take_up()
    s.pipe.from_remote(PubAck(6, 0x97) if qos == 1 else PubRec(6, 0x97))
    assert s.take_down() == []  # not acknowledged locally: the local session keeps it
    assert len(retries) == 1 and "0x97" in retries[0]
    assert (s.counters.refused_out, s.counters.forwarded) == (0, 0)
    s.pipe.from_local(local_msg(7))
    assert s.take_up() == []  # nothing more goes up on this link
