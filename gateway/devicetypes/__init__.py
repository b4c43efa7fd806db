"""What the gateway and its device layer agree on about devices, below both of them.

The config loader, the admin API and the terminal UI read and check device policies and GATT
profile declarations; the device layer (devices/) acts on them. Both import these modules, so
gateway/ never needs to import devices/ (only the composition root wires devices in). Standard
library and command schemas (gateway/commands/) only.
"""
