"""Reading config values: the key path and line of every value, and the checks
that several sections share. A problem becomes a ConfigError naming file, line and key path."""

from __future__ import annotations

import difflib
import ipaddress
import os
import pwd
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

U16 = 0xFFFF
U32 = 0xFFFFFFFF


class ConfigError(Exception):
    """A configuration problem, ready to show to a person as is."""

    def __init__(self, file: str, key_path: str, message: str, line: int | None = None) -> None:
        self.file = file
        self.key_path = key_path
        self.line = line
        self.detail = message
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {key_path}: {message}" if key_path else f"{where}: {message}")


_T = TypeVar("_T")
MISSING = object()


def show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Source:
    """The file being read: its name and the line of every key path, for messages."""

    def __init__(self, name: str, lines: dict[str, int]) -> None:
        self.name = name
        self.lines = lines

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(self.name, path, message, self.lines.get(path))


class Map:
    """A mapping being read; records which keys were asked for so that the rest are errors."""

    def __init__(self, src: Source, path: str, raw: object) -> None:
        self.src = src
        self.path = path
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise src.error(path, f"expected a mapping of keys, got {show(raw)}")
        for key in raw:
            if not isinstance(key, str):
                raise src.error(path, f"keys must be strings, got {show(key)}")
        self.raw: dict[str, object] = raw
        self.known: list[str] = []
        # Keys that belong to a sibling variant (e.g. "path" on a tcp listener): named in the
        # error so the reader sees why a real key is refused here.
        self.elsewhere: dict[str, str] = {}

    def key(self, key: str) -> str:
        return join(self.path, key)

    def error(self, key: str, message: str) -> ConfigError:
        return self.src.error(self.key(key), message)

    def take(self, key: str) -> object:
        self.known.append(key)
        return self.raw.get(key, MISSING)

    def read(
        self, key: str, default: _T, convert: Callable[[object], _T | None], expected: str
    ) -> _T:
        value = self.take(key)
        if value is MISSING:
            return default
        result = convert(value)
        if result is None:
            raise self.error(key, f"expected {expected}, got {show(value)}")
        return result

    def integer(self, key: str, default: int, low: int, high: int | None = None) -> int:
        expected = f"an integer {low}-{high}" if high is not None else f"an integer >= {low}"

        def convert(value: object) -> int | None:
            if isinstance(value, bool) or not isinstance(value, int):
                return None
            if value < low or (high is not None and value > high):
                return None
            return value

        return self.read(key, default, convert, expected)

    def number(
        self, key: str, default: float, low: float, high: float, *, low_open: bool = False
    ) -> float:
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        expected = f"a number {bound} and <= {high:g}"

        def convert(value: object) -> float | None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            number = float(value)
            if number != number or number > high or number < low or (low_open and number == low):
                return None
            return number

        return self.read(key, default, convert, expected)

    def boolean(self, key: str, default: bool) -> bool:
        return self.read(
            key, default, lambda v: v if isinstance(v, bool) else None, "true or false"
        )

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        def convert(value: object) -> str | None:
            # YAML 1.1 reads a bare off/on as a boolean; a choice named "off" means that.
            if isinstance(value, bool):
                value = "on" if value else "off"
            if isinstance(value, str) and value.lower() in choices:
                return value.lower()
            return None

        return self.read(key, default, convert, "one of " + ", ".join(choices))

    def string(
        self, key: str, default: str, check: Callable[[str], str | None] | None = None
    ) -> str:
        value = self.take(key)
        if value is MISSING:
            return default
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {show(value)}")
        problem = check(value) if check else None
        if problem:
            raise self.error(key, f"{problem}, got {show(value)}")
        return value

    def optional_string(self, key: str) -> str | None:
        value = self.take(key)
        if value is MISSING or value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a non-empty string or null, got {show(value)}")
        return value

    def file_path(self, key: str, default: Path) -> Path:
        return Path(os.path.expanduser(self.string(key, str(default), path_problem)))

    def optional_path(self, key: str) -> Path | None:
        value = self.optional_string(key)
        if value is None:
            return None
        problem = path_problem(value)
        if problem:
            raise self.error(key, f"{problem}, got {show(value)}")
        return Path(os.path.expanduser(value))

    def mapping(self, key: str) -> Map:
        value = self.take(key)
        return Map(self.src, self.key(key), None if value is MISSING else value)

    def sequence(self, key: str) -> list[object] | None:
        value = self.take(key)
        if value is MISSING:
            return None
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {show(value)}")
        return value

    def items(self, key: str) -> Iterator[tuple[str, object]]:
        values = self.sequence(key)
        for index, item in enumerate(values or ()):
            yield join(self.key(key), index), item

    def declare(self, keys: tuple[str, ...]) -> None:
        """Check for unknown keys before reading: a misspelt key must be reported as such,
        not through a cross-check that its default value then fails."""
        self.known.extend(keys)
        self.finish()

    def finish(self) -> None:
        for key in self.raw:
            if key in self.known:
                continue
            if key in self.elsewhere:
                raise self.error(key, self.elsewhere[key])
            message = f"unknown key {key!r}"
            close = difflib.get_close_matches(key, self.known, n=1, cutoff=0.6)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            else:
                message += f"; valid keys here: {', '.join(sorted(set(self.known)))}"
            raise self.error(key, message)


def path_problem(value: str) -> str | None:
    if not value:
        return "expected a non-empty path"
    if "\0" in value:
        return "expected a path without NUL characters"
    return None


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def host_problem(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if _HOSTNAME.match(value):
        return None
    return "expected an IP address or host name (0.0.0.0 or :: for every interface)"


def topic_prefix_problem(value: str) -> str | None:
    if not value or value.startswith("/") or value.endswith("/") or "//" in value:
        return "expected one or more non-empty topic levels such as 'gw' or 'home/gw'"
    if any(ch in value for ch in "+#\0"):
        return "expected a topic prefix without wildcards"
    if value.startswith("$"):
        return "expected a topic prefix not starting with '$'"
    return None


def url_path_problem(value: str) -> str | None:
    if not value.startswith("/") or any(ch in value for ch in "?# \t\r\n"):
        return "expected an HTTP path such as '/mqtt' (starting with '/', no spaces, '?' or '#')"
    return None


def glob_problem(value: str) -> str | None:
    return None if value else "expected a non-empty pattern ('*' matches everything)"


def current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def existing_file(section: Map, key: str, value: Path) -> Path:
    if not value.is_file():
        raise section.error(key, f"expected an existing file, got '{value}' (not found)")
    try:
        with open(value, "rb"):
            pass
    except PermissionError:
        # Checked here so that the message names the file: OpenSSL's error does not.
        raise section.error(
            key,
            f"cannot read '{value}': permission denied (make it readable by user {current_user()})",
        ) from None
    except OSError as exc:
        raise section.error(key, f"cannot read '{value}': {exc.strerror or exc}") from None
    return value
