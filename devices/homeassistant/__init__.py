"""Home Assistant MQTT discovery for the gateway's devices (pure: dicts and bytes, no I/O).

`discovery_messages` turns a device and the keys of its state object into one retained config
message per entity; `removal_messages` clears the configs of entities that went away. The caller
publishes them (retained, QoS 1) and re-publishes them when ``homeassistant/status`` says
``online``.

Facts from the Home Assistant MQTT documentation (integrations/mqtt, sensor.mqtt,
binary_sensor.mqtt, switch.mqtt, light.mqtt, cover.mqtt, event.mqtt, climate.mqtt) that shape
the payloads:

* Config topic: ``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config``; node id and
  object id may only use ``[a-zA-Z0-9_-]``. An empty retained payload on it removes the entity.
* ``device`` ties entities into the device registry and only works with ``unique_id`` set; it
  needs ``identifiers`` (or ``connections``); ``via_device`` names the hub that routes messages.
* ``availability`` is a list of topics (default payloads ``online``/``offline``, the same words
  as DESIGN §2); with ``availability_mode: all`` an entity is available only while every topic
  says ``online``: here the device's will *and* the gateway's own will.
* Event entities: the state topic carries JSON with an ``event_type`` that is one of the
  configured ``event_types``; a value template may render ``{}``, which is ignored.
* Template lights get ``state_template`` (must give ``on``/``off``), ``brightness_template``
  (0-255) and ``command_on_template`` with the variables ``brightness``, ``red``, ``green``,
  ``blue``, ``transition`` when Home Assistant sets them.
* Covers read their state (``open``, ``opening``, ``closed``, ``closing``, ``stopped``, which
  are also the words Shelly's ``Cover.GetStatus`` uses) and position through templates, and
  send ``set_position_template`` with the variable ``position``.

Events go to ``<prefix>/<id>/event`` (not retained) rather than the retained state topic: Home
Assistant fires an event for every message it receives, and a retained message is received
again on every (re)subscription -- each Home Assistant restart would replay the last button
press. `event_message` builds that message.

The modules: `discovery` builds the messages from the entities that `bthome`, `shelly`,
`wled` and `climate` (thermostats) describe per device family, or `readings` for any other
key; `registry` makes the device-registry block; `entity` holds the records and topic names,
`templates` the Jinja expressions every payload is written in. This package re-exports what
the rest of the gateway uses.
"""

from __future__ import annotations

from devices.homeassistant.discovery import (
    bridge_messages,
    discovery_configs,
    discovery_messages,
    entities_of,
    event_message,
    removal_messages,
    status_topic,
)
from devices.homeassistant.entity import (
    DeviceFacts,
    Entity,
    Message,
    Origin,
    config_topic,
    slug,
    topic_level,
)

__all__ = [
    "DeviceFacts",
    "Entity",
    "Message",
    "Origin",
    "bridge_messages",
    "config_topic",
    "discovery_configs",
    "discovery_messages",
    "entities_of",
    "event_message",
    "removal_messages",
    "slug",
    "status_topic",
    "topic_level",
]
