"""The gateway's own MQTT client: device sessions, the upstream bridge, the admin service and
the terminal UI all speak MQTT through it (built on the sans-I/O codec, gateway.mqtt)."""
