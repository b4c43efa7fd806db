"""config.yaml: loading, validation and the typed configuration values (plain data).

Every key is optional; an absent key takes the default written in the shipped config.yaml.
Anything we do not understand stops start-up with a ConfigError naming the file, the key
path and what was expected: a gateway that silently ignores a misspelt ``allow_anonymous``
is worse than one that refuses to start.

One module per section (listeners, persistence, limits, auth, devices, upstream), the whole
document (document.py), the YAML front end (load.py) and the readers they share (reader.py).
Nothing here builds a live object: gateway/wiring.py turns these values into the components'
own settings for the composition root.
"""

from gateway.config.auth import AclConfig as AclConfig
from gateway.config.auth import AuthConfig as AuthConfig
from gateway.config.devices import BLE_KINDS as BLE_KINDS
from gateway.config.devices import LAN_KINDS as LAN_KINDS
from gateway.config.devices import SCANNING_MODES as SCANNING_MODES
from gateway.config.devices import BleConfig as BleConfig
from gateway.config.devices import DevicesConfig as DevicesConfig
from gateway.config.devices import KnownDeviceConfig as KnownDeviceConfig
from gateway.config.devices import LanConfig as LanConfig
from gateway.config.devices import PolicyRule as PolicyRule
from gateway.config.document import LOG_LEVELS as LOG_LEVELS
from gateway.config.document import GatewayConfig as GatewayConfig
from gateway.config.document import LoggingConfig as LoggingConfig
from gateway.config.document import describe_listeners as describe_listeners
from gateway.config.document import with_demo as with_demo
from gateway.config.limits import LimitsConfig as LimitsConfig
from gateway.config.listeners import DEFAULT_LISTENERS as DEFAULT_LISTENERS
from gateway.config.listeners import DEFAULT_SOCKET_PATH as DEFAULT_SOCKET_PATH
from gateway.config.listeners import LISTENER_TYPES as LISTENER_TYPES
from gateway.config.listeners import ListenerConfig as ListenerConfig
from gateway.config.listeners import ListenerType as ListenerType
from gateway.config.listeners import describe_listener as describe_listener
from gateway.config.listeners import is_loopback_host as is_loopback_host
from gateway.config.listeners import websocket_origins as websocket_origins
from gateway.config.load import EMPTY_CONFIG as EMPTY_CONFIG
from gateway.config.load import load_config as load_config
from gateway.config.load import parse_config as parse_config
from gateway.config.persistence import SYNCHRONOUS_MODES as SYNCHRONOUS_MODES
from gateway.config.persistence import PersistenceConfig as PersistenceConfig
from gateway.config.reader import ConfigError as ConfigError
