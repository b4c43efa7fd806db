"""Per-connection topic alias state (MQTT 5.0 §3.3.2.3.4).

Aliases live and die with one network connection; a new connection starts with none, so
create one :class:`InboundAliases` and one :class:`OutboundAliases` per connection.
"""

from __future__ import annotations

import dataclasses

from gateway.mqtt.errors import ProtocolError
from gateway.mqtt.packets import NO_PROPERTIES, Properties, Publish
from gateway.mqtt.reason_codes import ReasonCode


def _check_maximum(maximum: int) -> None:
    if not 0 <= maximum <= 0xFFFF:
        raise ValueError(f"topic alias maximum must be 0..65535, got {maximum}")


class InboundAliases:
    """Aliases a peer sets up in the PUBLISH packets it sends us.

    ``maximum`` is the Topic Alias Maximum we announced (CONNECT or CONNACK); 0 means the
    peer may not use aliases at all.
    """

    __slots__ = ("_last_in", "_last_out", "_topics", "maximum")

    def __init__(self, maximum: int) -> None:
        _check_maximum(maximum)
        self.maximum = maximum
        self._topics: dict[int, str] = {}
        # The codec hands out one shared Properties object per distinct property block, so
        # remembering the last one stripped avoids rebuilding a 27-field value per message.
        self._last_in: Properties | None = None
        self._last_out: Properties = NO_PROPERTIES

    def resolve(self, p: Publish) -> Publish:
        """The publish with its real topic and without the topic alias property.

        Raises ProtocolError: Topic Alias invalid for alias 0 or an alias above the maximum,
        Protocol Error for an empty topic with an alias that was never set.
        """
        props = p.properties
        alias = props.topic_alias
        if alias is None:
            if not p.topic:
                raise ProtocolError("empty topic name without a topic alias")
            return p
        if alias == 0 or alias > self.maximum:
            # MQTT-3.3.2-8 (0 is not an alias), MQTT-3.3.2-9 (above our maximum).
            raise ProtocolError(
                f"topic alias {alias} outside 1..{self.maximum}", ReasonCode.TOPIC_ALIAS_INVALID
            )
        topic = p.topic
        if topic:
            self._topics[alias] = topic
        else:
            known = self._topics.get(alias)
            if known is None:
                # An empty topic name with an alias that maps to nothing leaves the PUBLISH
                # without a topic: a Protocol Error (0x82). 0x94 is for the alias value itself.
                raise ProtocolError(f"topic alias {alias} used before it was set")
            topic = known
        if props is self._last_in:
            stripped = self._last_out
        else:
            stripped = dataclasses.replace(props, topic_alias=None)
            self._last_in, self._last_out = props, stripped
        return dataclasses.replace(p, topic=topic, properties=stripped)


class OutboundAliases:
    """Aliases we assign to the topics of the PUBLISH packets we send to a peer.

    ``maximum`` is the Topic Alias Maximum the peer announced. Topics get aliases 1, 2, ...
    in order of first use until the aliases run out; later topics are sent in full. Mappings
    are never replaced, so every step is O(1) and the peer's table never churns.

    Call :meth:`apply` only for a packet that will really be sent: the first packet of a
    topic is what tells the peer the mapping.
    """

    __slots__ = ("_alias_only", "_aliases", "maximum")

    def __init__(self, maximum: int) -> None:
        _check_maximum(maximum)
        self.maximum = maximum
        self._aliases: dict[str, int] = {}
        self._alias_only: dict[int, Properties] = {}

    def _with_alias(self, props: Properties, alias: int) -> Properties:
        if props is NO_PROPERTIES:
            cached = self._alias_only.get(alias)
            if cached is None:
                cached = self._alias_only[alias] = Properties(topic_alias=alias)
            return cached
        return dataclasses.replace(props, topic_alias=alias)

    def apply(self, p: Publish) -> Publish:
        """The publish as it goes on the wire: topic + new alias, alias only, or unchanged."""
        props = p.properties
        if props.topic_alias is not None:
            # An alias is meaningful only on the connection that set it; never forward one.
            props = dataclasses.replace(props, topic_alias=None)
            p = dataclasses.replace(p, properties=props)
        topic = p.topic
        alias = self._aliases.get(topic)
        if alias is not None:
            return dataclasses.replace(p, topic="", properties=self._with_alias(props, alias))
        if len(self._aliases) < self.maximum and topic:
            alias = len(self._aliases) + 1
            self._aliases[topic] = alias
            return dataclasses.replace(p, properties=self._with_alias(props, alias))
        return p
