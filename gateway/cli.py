"""The ``edge-gateway`` command: run, check-config, passwd, tui."""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from gateway.auth.passwords import (
    PasswordFileError,
    delete_user,
    hash_password,
    read_password_file,
    set_user,
    validate_username,
)
from gateway.broker.core import VERSION
from gateway.compiled import describe as describe_build
from gateway.config import (
    ConfigError,
    GatewayConfig,
    describe_listeners,
    is_loopback_host,
    load_config,
    with_demo,
)
from gateway.startup import StartupError
from gateway.tui.main import TuiError, run_tui
from gateway.tui.main import add_arguments as add_tui_arguments
from gateway.upstream.settings import UpstreamConfig

PROG = "edge-gateway"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2  # also argparse's exit code for a bad command line
# Output cut short (`check-config | head -1`): what a tool killed by SIGPIPE reports.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


class CliError(Exception):
    """A failure to report on one line, without a traceback."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A home gateway in one process: durable MQTT broker, device bridge, TUI.",
    )
    # Whether the opt-in mypyc build is in use (gateway/compiled.py), so a user can tell.
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {VERSION} ({describe_build()})"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="run the gateway")
    run.add_argument(
        "--config",
        type=Path,
        default=Path("config.yaml"),
        metavar="FILE",
        help="configuration file (default: ./config.yaml)",
    )
    run.add_argument(
        "--demo",
        action="store_true",
        help="add simulated devices (a BTHome sensor, a sleepy eQ-3 thermostat, a Shelly "
        "plug) to try the gateway without hardware; overrides `demo:` in the config",
    )

    check = commands.add_parser(
        "check-config", help="validate a configuration file and the files it names"
    )
    check.add_argument(
        "--config",
        type=Path,
        default=Path("config.yaml"),
        metavar="FILE",
        help="configuration file (default: ./config.yaml)",
    )

    passwd = commands.add_parser(
        "passwd",
        help="add, change or delete a user in a password file",
        description="Add USER to FILE (created if missing, mode 0600) or change their "
        "password; with -D delete them. The password is asked twice on a terminal, or read "
        "as one line from standard input otherwise (for scripts).",
    )
    passwd.add_argument("file", type=Path, metavar="FILE", help="password file")
    passwd.add_argument("user", metavar="USER", help="user name")
    passwd.add_argument("-D", dest="delete", action="store_true", help="delete USER")

    tui = commands.add_parser(
        "tui",
        help="terminal UI: devices, sessions, pending commands, events",
        description="Manage a running gateway from the terminal. Connects to its Unix socket "
        "(from the config) by default, or over TCP with --host/--port/--user.",
    )
    add_tui_arguments(tui)
    return parser


def _load(path: Path) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _cmd_run(config_path: Path, demo: bool = False) -> int:
    cfg = _load(config_path)
    if demo:
        try:
            cfg = with_demo(cfg, str(config_path))
        except ConfigError as exc:
            raise CliError(f"{exc} (--demo)") from None
    # Imported here: the app pulls in the whole gateway, which the other commands do not need.
    from gateway.app import run  # type: ignore[import-not-found, unused-ignore]

    status: int = run(cfg, config_path=config_path)
    return status


def _store_warning(path: Path) -> str | None:
    directory = (Path.cwd() / path).parent
    if not directory.is_dir():
        return f"warning: the store's directory {directory} does not exist (yet)"
    if not os.access(directory, os.W_OK):
        return f"warning: the store's directory {directory} is not writable by this user"
    return None


def _cmd_check_config(config_path: Path, out: TextIO) -> int:
    # load_config checks every key, and reads the files the config names: the password file
    # (and that admin users are in it), TLS certificates and keys (loaded), ACL rules, device
    # policies, GATT profiles.
    cfg = _load(config_path)
    print(f"{config_path}: OK", file=out)
    print("listeners:", file=out)
    for listener, line in zip(cfg.listeners, describe_listeners(cfg), strict=True):
        print(f"  {line}", file=out)
        path = listener.path
        if listener.type == "unix" and path is not None and not path.is_absolute():
            print(f"    = {Path.cwd() / path} from the working directory", file=out)
    store = cfg.persistence
    if store.enabled:
        print(f"store: {store.path} (synchronous={store.synchronous})", file=out)
        if not store.path.is_absolute():
            print(f"  = {Path.cwd() / store.path} from the working directory", file=out)
        warning = _store_warning(store.path)
        if warning is not None:
            print(f"  {warning}", file=out)
    else:
        print("store: disabled (nothing survives a restart)", file=out)
    auth = cfg.auth
    if auth.password_file is not None:
        count = len(read_password_file(auth.password_file))
        print(f"password file: {auth.password_file} ({count} users)", file=out)
    else:
        print("password file: none", file=out)
    if auth.admin_users:
        print(f"admin users: {', '.join(auth.admin_users)}", file=out)
    acl = auth.acl
    print(f"acl: {len(acl.rules)} rules, default {acl.default}", file=out)
    devices = cfg.devices
    kinds = Counter(device.kind for device in devices.known)
    declared = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none"
    print(
        f"devices: BLE {'on' if devices.ble.enabled else 'off'}, "
        f"LAN {'on' if devices.lan.enabled else 'off'}; declared: {declared}; "
        f"{len(devices.policies)} kind policies, {len(devices.policy_rules)} policy rules, "
        f"{len(devices.gatt_profiles)} GATT profiles",
        file=out,
    )
    if cfg.demo:
        print("demo: on (simulated devices are added)", file=out)
    if not cfg.upstream:
        print("upstream: none", file=out)
    for upstream in cfg.upstream:
        print(f"upstream {describe_upstream(upstream)}", file=out)
        for warning in upstream_warnings(upstream):
            print(f"  {warning}", file=out)
    return EXIT_OK


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_upstream(cfg: UpstreamConfig) -> str:
    """One line: name, broker, protocol, TLS, login, rules and queue (never the password)."""
    protocol = "MQTT 5" if cfg.protocol == 5 else "MQTT 3.1.1"
    if cfg.tls is None:
        tls = "no TLS"
    elif cfg.tls.insecure:
        tls = "TLS UNCHECKED (insecure)"
    else:
        checked = f"CA {cfg.tls.cafile}" if cfg.tls.cafile else "system CAs"
        if cfg.tls.certfile is not None:
            checked += ", client certificate"
        tls = f"TLS ({checked})"
    login = "anonymous"
    if cfg.username is not None:
        login = f"user {cfg.username!r}"
        if cfg.password_file is not None:
            login += f" with the password in {cfg.password_file}"
        elif cfg.password is not None:
            login += " with a password"
    queue = cfg.queue
    most = f"{queue.max_messages} messages" if queue.max_messages else "unlimited messages"
    if queue.max_bytes:
        most += f", {queue.max_bytes} bytes"
    rules = len(cfg.topics)
    return (
        f"{cfg.name}: {_host_port(cfg.host, cfg.port)}, {protocol}, {tls}, {login}, "
        f"client id {cfg.client_id!r}, {rules} topic rule{'s' if rules != 1 else ''}, "
        f"queue {most}, {queue.overflow}"
    )


def upstream_warnings(cfg: UpstreamConfig) -> list[str]:
    warnings: list[str] = []
    if cfg.tls is not None and cfg.tls.insecure:
        secret = " and the password" if cfg.password is not None else ""
        warnings.append(
            "WARNING: tls.insecure: the broker's certificate and host name are NOT checked; "
            f"anyone on the way can pose as the broker and read the messages{secret}"
        )
    if cfg.tls is None and cfg.password is not None and not is_loopback_host(cfg.host):
        warnings.append(
            f"WARNING: no TLS: the password goes to {cfg.host} in clear text (set tls: {{}})"
        )
    path = cfg.password_file
    if path is not None:
        try:
            if path.stat().st_mode & 0o077:
                warnings.append(f"warning: {path} is open to its group or others (chmod 600 it)")
        except OSError:
            pass  # it was read a moment ago; a file that just went is the next start's error
    return warnings


def _read_new_password(user: str) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(f"Password for {user}: ")
        second = getpass.getpass("Reenter password: ")
        if first != second:
            raise CliError("passwords do not match")
        password = first
    else:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password.removesuffix("\r")
    if not password:
        raise CliError("empty password")
    return password


def _cmd_passwd(path: Path, user: str, delete: bool, out: TextIO) -> int:
    try:
        validate_username(user)
    except ValueError as exc:
        raise CliError(f"bad user name {user!r}: {exc}") from None
    try:
        if delete:
            if not delete_user(path, user):
                raise CliError(f"{path}: no user {user!r}")
            print(f"deleted user {user!r} from {path}", file=out)
            return EXIT_OK
        existed = path.exists() and user in read_password_file(path)
        password = _read_new_password(user)
        set_user(path, user, hash_password(password))
    except PasswordFileError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}") from None
    print(f"{'changed password of' if existed else 'added'} user {user!r} in {path}", file=out)
    return EXIT_OK


def _cmd_tui(args: argparse.Namespace) -> int:
    try:
        return run_tui(args)
    except TuiError as exc:
        raise CliError(str(exc)) from None


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return _cmd_run(args.config, args.demo)
    if args.command == "check-config":
        return _cmd_check_config(args.config, sys.stdout)
    if args.command == "passwd":
        return _cmd_passwd(args.file, args.user, args.delete, sys.stdout)
    if args.command == "tui":
        return _cmd_tui(args)
    raise AssertionError(f"unhandled command {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        status = _dispatch(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is then handled below
        return status
    except CliError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_CONFIG if args.command in ("run", "check-config") else EXIT_FAILURE
    except StartupError as exc:
        # Not EXIT_CONFIG: the unit restarts the gateway, and a port or store that is busy
        # now may be free in a moment.
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        # The reader went away (`| head`): say nothing more, and keep Python from failing
        # again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except PasswordFileError as exc:
        # check-config: the file changed between loading and listing.
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (KeyboardInterrupt, EOFError):
        print(file=sys.stderr)
        return 130
