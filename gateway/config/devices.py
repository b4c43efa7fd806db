"""The devices section: BLE and LAN settings, policies, GATT profiles, known devices."""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import re
from dataclasses import dataclass, fields

from gateway.config.reader import MISSING, ConfigError, Map, Source, host_problem, join, show
from gateway.devicetypes.demo import clashing_ids
from gateway.devicetypes.gatt_profile import ConfiguredProfile, ProfileError, profile_from_config
from gateway.devicetypes.policy import KIND_DEFAULTS, DevicePolicy, PolicyError

SCANNING_MODES = ("auto", "active", "passive")
# Device kinds the bridge can run from config today, and how each one is reached.
BLE_KINDS = ("bthome", "eq3", "gatt")
LAN_KINDS = ("shelly", "wled")
_POLICY_KEYS = tuple(f.name for f in fields(DevicePolicy))
_BLE_ADDRESS = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_BIND_KEY = re.compile(r"^[0-9A-Fa-f]{32}$")
_BAD_DEVICE_ID = re.compile(r"[/+#\s\x00]")


@dataclass(frozen=True, slots=True)
class BleConfig:
    enabled: bool = True
    scanning_mode: str = "auto"  # auto | active | passive
    adapter: str | None = None  # e.g. "hci0"; None = BlueZ's default adapter
    # Wake windows of sleepy command devices (devices/ble/sleepy.py), in seconds.
    connect_timeout: float = 10.0
    wake_window: float = 30.0
    retry_backoff: float = 2.0  # first pause after a failed window; doubles, at most 300 s
    state_refresh: float = 3600.0  # ask a device for its state when it is older than this


@dataclass(frozen=True, slots=True)
class LanConfig:
    enabled: bool = True
    # Interface addresses mDNS browses on; empty = no discovery (never the default
    # interfaces implicitly: that would multicast on whatever network the box is on).
    interfaces: tuple[str, ...] = ()
    poll_interval: float = 10.0
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class KnownDeviceConfig:
    """A device declared under devices.known; ``policy`` is fully resolved (kind default,
    then devices.policies.<kind>, then the device's own overrides)."""

    id: str
    kind: str
    policy: DevicePolicy
    name: str = ""
    address: str | None = None  # BLE address, upper case
    host: str | None = None
    port: int = 80
    bind_key: str | None = None  # 32 hex digits
    profile: str | None = None  # gatt devices: the name of a devices.gatt_profiles entry


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """Policy overrides for devices that are not declared one by one, matched by id, BLE
    address or name with shell-style patterns (a missing pattern matches anything)."""

    overrides: tuple[tuple[str, object], ...]
    id: str | None = None
    address: str | None = None
    name: str | None = None

    def matches(self, device_id: str, address: str | None, name: str | None) -> bool:
        return all(
            pattern is None or (value is not None and fnmatch.fnmatchcase(value, pattern))
            for pattern, value in (
                (self.id, device_id),
                (self.address, address.upper() if address else None),
                (self.name, name),
            )
        )


@dataclass(frozen=True, slots=True)
class DevicesConfig:
    ble: BleConfig = BleConfig()
    lan: LanConfig = LanConfig()
    policies: tuple[tuple[str, DevicePolicy], ...] = ()  # kind -> policy, overriding defaults
    policy_rules: tuple[PolicyRule, ...] = ()
    known: tuple[KnownDeviceConfig, ...] = ()
    gatt_profiles: tuple[tuple[str, ConfiguredProfile], ...] = ()  # name -> profile

    def gatt_profile(self, name: str) -> ConfiguredProfile:
        """The profile declared as devices.gatt_profiles.<name>; KeyError if there is none
        (cannot happen for the ``profile`` of a device under known: checked at load)."""
        for candidate, profile in self.gatt_profiles:
            if candidate == name:
                return profile
        raise KeyError(name)

    def policy_for(
        self,
        kind: str,
        device_id: str = "",
        address: str | None = None,
        name: str | None = None,
    ) -> DevicePolicy:
        """The kind's default, then devices.policies.<kind>, then the first matching rule of
        devices.policy_rules (declared devices carry their own resolved policy)."""
        policy = dict(self.policies).get(kind, DevicePolicy.for_kind(kind))
        for rule in self.policy_rules:
            if rule.matches(device_id, address, name):
                return policy.with_overrides(dict(rule.overrides))
        return policy


def _policy(section: Map, base: DevicePolicy, keys: tuple[str, ...]) -> DevicePolicy:
    """``base`` with the policy keys present in ``section``; a bad value names its key."""
    overrides = {key: section.take(key) for key in keys if key in section.raw}
    try:
        return base.with_overrides(overrides)
    except PolicyError as exc:
        key, _, message = str(exc).partition(": ")
        if key not in overrides:  # pragma: no cover - every PolicyError names a key
            raise section.src.error(section.path, str(exc)) from None
        raise section.error(key, message) from None


def _interface_problem(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "expected the IP address of an interface, such as '192.168.1.10'"
    return None


# Which devices a kind-specific key of devices.known.<id> belongs to, for the error message.
_KEY_OWNERS = {
    "address": "BLE",
    "bind_key": "bthome",
    "profile": "gatt",
    "host": "LAN",
    "port": "LAN",
}


def _device_keys(kind: str) -> tuple[str, ...]:
    if kind not in BLE_KINDS:
        return ("host", "port")
    extra = {"bthome": ("bind_key",), "gatt": ("profile",)}.get(kind, ())
    return ("address", *extra)


def _read_profile_name(section: Map, profiles: dict[str, ConfiguredProfile]) -> str:
    known = ", ".join(sorted(profiles)) or "none is declared"
    value = section.take("profile")
    if value is MISSING or value is None:
        raise section.error(
            "profile", f"a gatt device needs the name of a devices.gatt_profiles entry ({known})"
        )
    if not isinstance(value, str) or value not in profiles:
        message = f"expected the name of a devices.gatt_profiles entry ({known}), got {show(value)}"
        close = (
            difflib.get_close_matches(value, list(profiles), n=1) if isinstance(value, str) else []
        )
        if close:
            message += f" (did you mean {close[0]!r}?)"
        raise section.error("profile", message)
    return value


def _read_known_device(
    src: Source,
    section: Map,
    device_id: str,
    policies: dict[str, DevicePolicy],
    profiles: dict[str, ConfiguredProfile] | None = None,
) -> KnownDeviceConfig:
    kinds = BLE_KINDS + LAN_KINDS
    kind = section.choice("kind", "", kinds)
    if not kind:
        raise section.error("kind", f"expected one of {', '.join(kinds)} (every device needs one)")
    ble = kind in BLE_KINDS
    own = ("kind", "name", *_device_keys(kind))
    for key, owner in _KEY_OWNERS.items():
        if key not in own:
            section.elsewhere[key] = f"{key!r} applies to {owner} devices, not {kind}"
    section.declare(own + _POLICY_KEYS)
    name = section.optional_string("name") or ""
    policy = _policy(section, policies.get(kind, DevicePolicy.for_kind(kind)), _POLICY_KEYS)
    if ble:
        address = section.optional_string("address")
        if address is None:
            raise section.error("address", "a BLE device needs its address (AA:BB:CC:DD:EE:FF)")
        if not _BLE_ADDRESS.match(address):
            raise section.error(
                "address", f"expected a BLE address such as AA:BB:CC:DD:EE:FF, got {address!r}"
            )
        raw_key = section.take("bind_key") if kind == "bthome" else None
        bind_key = None if raw_key is MISSING or raw_key is None else raw_key
        if bind_key is not None and not (isinstance(bind_key, str) and _BIND_KEY.match(bind_key)):
            # The value is a secret: not repeated in the message. A key of digits only is
            # read as a number by YAML, hence the hint about quotes.
            raise section.error(
                "bind_key", "expected 32 hex digits (the 16-byte BTHome key, in quotes)"
            )
        assert bind_key is None or isinstance(bind_key, str)
        result = KnownDeviceConfig(
            id=device_id,
            kind=kind,
            policy=policy,
            name=name,
            address=address.upper(),
            bind_key=bind_key.lower() if bind_key else None,
            profile=_read_profile_name(section, profiles or {}) if kind == "gatt" else None,
        )
    else:
        host = section.string("host", "", host_problem)
        if not host:
            raise section.error("host", "a LAN device needs its host name or IP address")
        result = KnownDeviceConfig(
            id=device_id,
            kind=kind,
            policy=policy,
            name=name,
            host=host,
            port=section.integer("port", 80, 1, 65535),
        )
    section.finish()
    return result


def _profile_error(src: Source, path: str, exc: ProfileError) -> ConfigError:
    full = join(path, exc.path) if exc.path else path
    # A key YAML turned into something else (``on:`` into true) is not in the line table
    # under the name the profile reader gives it: the nearest enclosing key's line will do.
    probe = full
    while probe and probe not in src.lines:
        probe = probe.rpartition(".")[0]
    return ConfigError(src.name, full, exc.detail, src.lines.get(probe))


def _read_gatt_profiles(src: Source, section: Map) -> dict[str, ConfiguredProfile]:
    profiles: dict[str, ConfiguredProfile] = {}
    for name, raw in section.raw.items():
        path = section.key(name)
        if not name:
            raise src.error(path, "expected a profile name, got an empty string")
        try:
            profiles[name] = profile_from_config(raw)
        except ProfileError as exc:
            raise _profile_error(src, path, exc) from None
    return profiles


def read_devices(src: Source, section: Map) -> DevicesConfig:
    section.declare(("ble", "lan", "policies", "policy_rules", "gatt_profiles", "known"))
    ble = _read_ble(section.mapping("ble"))
    lan = _read_lan(src, section.mapping("lan"))
    policies = _read_policies(section.mapping("policies"))
    rules = _read_policy_rules(src, section)
    profiles = _read_gatt_profiles(src, section.mapping("gatt_profiles"))
    known = _read_known(src, section.mapping("known"), policies, profiles)
    section.finish()
    return DevicesConfig(
        ble=ble,
        lan=lan,
        policies=tuple(sorted(policies.items())),
        policy_rules=tuple(rules),
        known=tuple(known),
        gatt_profiles=tuple(profiles.items()),
    )


def _read_ble(section: Map) -> BleConfig:
    d = BleConfig()
    ble = BleConfig(
        enabled=section.boolean("enabled", d.enabled),
        scanning_mode=section.choice("scanning_mode", d.scanning_mode, SCANNING_MODES),
        adapter=section.optional_string("adapter"),
        connect_timeout=section.number("connect_timeout", d.connect_timeout, 0, 120, low_open=True),
        wake_window=section.number("wake_window", d.wake_window, 0, 600, low_open=True),
        retry_backoff=section.number("retry_backoff", d.retry_backoff, 0, 300, low_open=True),
        state_refresh=section.number(
            "state_refresh", d.state_refresh, 0, 7 * 24 * 3600, low_open=True
        ),
    )
    section.finish()
    return ble


def _read_lan(src: Source, section: Map) -> LanConfig:
    d = LanConfig()
    interfaces: list[str] = []
    for path, item in section.items("interfaces"):
        problem = _interface_problem(item) if isinstance(item, str) else "expected a string"
        if problem:
            raise src.error(path, f"{problem}, got {show(item)}")
        assert isinstance(item, str)
        interfaces.append(item)
    lan = LanConfig(
        enabled=section.boolean("enabled", d.enabled),
        interfaces=tuple(interfaces),
        poll_interval=section.number("poll_interval", d.poll_interval, 0, 3600, low_open=True),
        timeout=section.number("timeout", d.timeout, 0, 60, low_open=True),
    )
    section.finish()
    return lan


def _read_policies(section: Map) -> dict[str, DevicePolicy]:
    section.declare(tuple(KIND_DEFAULTS))
    policies: dict[str, DevicePolicy] = {}
    for kind in section.raw:
        policy_section = section.mapping(kind)
        policy_section.declare(_POLICY_KEYS)
        policies[kind] = _policy(policy_section, DevicePolicy.for_kind(kind), _POLICY_KEYS)
    section.finish()
    return policies


def _read_policy_rules(src: Source, section: Map) -> list[PolicyRule]:
    rules: list[PolicyRule] = []
    for path, raw in section.items("policy_rules"):
        rule_section = Map(src, path, raw)
        matchers = ("id", "address", "name")
        rule_section.declare(matchers + _POLICY_KEYS)
        patterns = {key: rule_section.optional_string(key) for key in matchers}
        if not any(patterns.values()):
            raise src.error(path, "a rule needs at least one of id, address, name (a pattern)")
        overrides = {key: rule_section.take(key) for key in _POLICY_KEYS if key in rule_section.raw}
        _policy(rule_section, DevicePolicy(), _POLICY_KEYS)  # values checked now, not at match
        rule_section.finish()
        address = patterns["address"]
        rules.append(
            PolicyRule(
                overrides=tuple(overrides.items()),
                id=patterns["id"],
                address=address.upper() if address else None,
                name=patterns["name"],
            )
        )
    return rules


def _read_known(
    src: Source,
    section: Map,
    policies: dict[str, DevicePolicy],
    profiles: dict[str, ConfiguredProfile],
) -> list[KnownDeviceConfig]:
    known: list[KnownDeviceConfig] = []
    addresses: dict[str, str] = {}
    for device_id in list(section.raw):
        path = section.key(device_id)
        if not device_id or _BAD_DEVICE_ID.search(device_id) or device_id.startswith("$"):
            raise src.error(
                path, "expected a device id that is one topic level: no '/', '+', '#', spaces"
            )
        device = _read_known_device(src, section.mapping(device_id), device_id, policies, profiles)
        where = device.address or f"{device.host}:{device.port}"
        if where in addresses:
            raise src.error(path, f"{where} is already declared as {addresses[where]!r}")
        addresses[where] = device_id
        known.append(device)
    section.finish()
    return known


def check_demo_ids(src: Source, devices: DevicesConfig) -> None:
    for device_id in clashing_ids(device.id for device in devices.known):
        path = f"devices.known.{device_id}"
        raise src.error(path, "demo mode uses this id; rename the device, or turn the demo off")
