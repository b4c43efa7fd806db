"""Sans-I/O MQTT codec for MQTT 3.1 (MQIsdp), 3.1.1 and 5.0: the one import for its users.

Bytes in, frozen packets out (:mod:`gateway.mqtt.packets`), and back. The work is done in
modules split at the codec's seams, and their public names are gathered here so that callers
do not depend on that split:

- :mod:`gateway.mqtt.stream`: framing (fixed header, size limit) and :class:`StreamDecoder`,
  which keeps a short buffer and waits for more;
- :mod:`gateway.mqtt.decoding`: strict decoding of each packet type's body; every violation
  the specs let a receiver detect raises an :class:`MQTTError` subclass with its reason code;
- :mod:`gateway.mqtt.encoding`: packets to bytes; ``ValueError`` for a packet the protocol
  level cannot carry (a programming error);
- :mod:`gateway.mqtt.properties`: the primitive types and 5.0 properties;
- :mod:`gateway.mqtt.topics` and :mod:`gateway.mqtt.reason_codes`: topic validity and the
  reason codes each packet type may carry, shared by both directions.

Spec references: "3.1.1 §x" is the OASIS MQTT 3.1.1 standard, "5.0 §x" the OASIS MQTT 5.0 one.
"""

from __future__ import annotations

from gateway.mqtt.encoding import encode, encode_publish, publish_size
from gateway.mqtt.stream import MAX_PACKET_SIZE, StreamDecoder, decode_packet
from gateway.mqtt.topics import is_valid_topic_filter, is_valid_topic_name

__all__ = [
    "MAX_PACKET_SIZE",
    "StreamDecoder",
    "decode_packet",
    "encode",
    "encode_publish",
    "is_valid_topic_filter",
    "is_valid_topic_name",
    "publish_size",
]
