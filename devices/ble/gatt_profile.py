"""GATT profiles declared in config.yaml: see gateway/devicetypes/gatt_profile.py.

The config loader checks a declaration at load time and the device layer carries it out, so
the code lives below both; re-exported here for the device layer.
"""

from gateway.devicetypes.gatt_profile import ConfiguredProfile as ConfiguredProfile
from gateway.devicetypes.gatt_profile import GattCommandSpec as GattCommandSpec
from gateway.devicetypes.gatt_profile import ProfileError as ProfileError
from gateway.devicetypes.gatt_profile import normalize_uuid as normalize_uuid
from gateway.devicetypes.gatt_profile import profile_from_config as profile_from_config
