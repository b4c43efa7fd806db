"""`edge-gateway tui`: where to connect, how to log in, then run the app."""

from __future__ import annotations

import argparse
import gc
import getpass
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from gateway.config import ConfigError, load_config

PASSWORD_ENV = "EDGE_GATEWAY_PASSWORD"
DEFAULT_CONFIGS = (Path("config.yaml"), Path("/etc/edge-gateway/config.yaml"))


class TuiError(Exception):
    """A reason not to start, said on one line."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the gateway's configuration, for its Unix socket and topic prefix (default: "
        "./config.yaml, else /etc/edge-gateway/config.yaml)",
    )
    parser.add_argument("--socket", metavar="PATH", help="the gateway's Unix socket")
    parser.add_argument("--host", help="connect over TCP to this host instead of the socket")
    parser.add_argument("--port", type=int, default=1883, help="TCP port (default: 1883)")
    parser.add_argument(
        "--user",
        help=f"user name (an admin user); the password is asked for, or read from "
        f"${PASSWORD_ENV} (for scripts). It is never taken from the command line.",
    )
    parser.add_argument("--prefix", help="topic prefix (default: the config's, else gw)")
    parser.add_argument("--log", type=Path, metavar="FILE", help="write the TUI's own log to FILE")


@dataclass(frozen=True, slots=True)
class Target:
    where: str
    socket: str | None
    host: str | None
    port: int
    prefix: str


def resolve_target(args: argparse.Namespace) -> Target:
    config_path: Path | None = args.config
    if config_path is None and not (args.socket or args.host):
        config_path = next((p for p in DEFAULT_CONFIGS if p.exists()), None)
    socket_path: str | None = args.socket
    prefix: str | None = args.prefix
    if config_path is not None:
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            raise TuiError(f"{exc} (or name the gateway with --socket or --host)") from None
        prefix = prefix or config.topic_prefix
        if socket_path is None and not args.host:
            unix = [lst for lst in config.listeners if lst.type == "unix"]
            if not unix:
                raise TuiError(
                    f"{config_path} has no unix listener: use --host/--port, or --socket"
                )
            socket_path = str(unix[0].path)
    if args.host:
        return Target(f"{args.host}:{args.port}", None, args.host, args.port, prefix or "gw")
    if socket_path is None:
        raise TuiError("no configuration found: name the gateway with --socket or --host")
    return Target(f"unix:{socket_path}", socket_path, None, 0, prefix or "gw")


def read_password(user: str | None) -> str | None:
    if user is None:
        return None
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env is not None:
        return from_env
    return getpass.getpass(f"Password for {user}: ")


def tune_gc() -> None:
    """Every live update of a big gateway parses thousands of small objects that are garbage
    a second later; with CPython's default threshold (700) generation-0 collections ran
    all the time and older generations were scanned often enough to stall key presses
    (bench/bench_tui.py). The gateway process does the same (gateway/app.py)."""
    gc.set_threshold(50_000, 20, 20)


def run_tui(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    password = read_password(args.user)
    tune_gc()
    # Anything logged to the terminal would tear the screen apart.
    root = logging.getLogger()
    root.addHandler(logging.NullHandler())
    if args.log is not None:
        handler = logging.FileHandler(args.log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)

    # Imported here: Textual is only needed by this command.
    from gateway.tui.app import GatewayTUI
    from gateway.tui.client import AdminClient, tcp_connector, unix_connector

    if target.socket is not None:
        connector = unix_connector(target.socket)
    else:
        assert target.host is not None
        connector = tcp_connector(target.host, target.port)
    client = AdminClient(
        connector,
        prefix=target.prefix,
        username=args.user,
        password=password,
        where=target.where,
    )
    GatewayTUI(client, prefix=target.prefix).run()
    return 0
