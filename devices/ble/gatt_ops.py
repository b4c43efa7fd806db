"""The GATT command vocabulary (steps, confirmations, profiles): see gateway/devicetypes/.

It lives below both the config loader and the device layer; re-exported here for the device
families (eq3, sleepy, fleet) that use it.
"""

from gateway.devicetypes.gatt_ops import CommandError as CommandError
from gateway.devicetypes.gatt_ops import Confirmation as Confirmation
from gateway.devicetypes.gatt_ops import GattProfile as GattProfile
from gateway.devicetypes.gatt_ops import GattStep as GattStep
