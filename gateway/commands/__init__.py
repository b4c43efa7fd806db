"""What a device's commands may look like (schema.py): shared by the broker, the device
drivers, Home Assistant discovery and the terminal UI, so that they can never disagree."""
