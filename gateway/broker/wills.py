"""Will messages: when a will is due and how it is published."""

from __future__ import annotations

from dataclasses import replace

from gateway.broker.routing import Routing, inbound_properties
from gateway.mqtt.packets import (
    NO_PROPERTIES,
    PROTOCOL_V5,
    Will,
)


class Wills(Routing):
    def _publish_will(self, client_id: str, will: Will, now: float) -> None:
        self.stats.wills_published += 1
        props = will.properties
        if props is not NO_PROPERTIES:
            if props.will_delay_interval is not None:
                props = replace(props, will_delay_interval=None)
            props = inbound_properties(props)
        mei = props.message_expiry_interval
        expires_at = None if mei is None else now + mei
        qos = min(will.qos, self.settings.max_qos)
        retain = will.retain and self.settings.retain_available
        self._accept(
            None, will.topic, will.payload, qos, retain, props, expires_at, client_id, now, None
        )


def will_delay(will: Will, version: int) -> int:
    if version != PROTOCOL_V5:
        return 0
    return will.properties.will_delay_interval or 0
