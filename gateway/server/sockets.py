"""Socket-level helpers of the listeners and connections: what the kernel's send queue
holds, closing after a linger, a peer's address as the limits count it, the Unix socket file.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import resource
import socket
import struct
import termios
from pathlib import Path

# Unix socket files: the gateway's user and group only (an admin listener trusts whoever
# can connect).
SOCKET_MODE = 0o660


def unacknowledged(transport: asyncio.BaseTransport | None) -> int:
    """Bytes in the socket's send queue that the peer has not acknowledged (Linux SIOCOUTQ);
    0 where that cannot be asked."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return 0
    try:
        answer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", answer)[0])


# Beyond this the soft limit is not raised even if the hard one allows (some systems set the
# hard limit to "unlimited", which setrlimit refuses for open files).
OPEN_FILES_CEILING = 1 << 20


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open files to its hard limit; returns (before,
    after). Every connection is a file descriptor, and the usual soft limit of 1024 (systemd's
    default for services, kept low for programs that use select()) would refuse clients long
    before memory runs out; asyncio waits with epoll, which has no such limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_CEILING if hard == resource.RLIM_INFINITY else hard
    wanted = min(wanted, OPEN_FILES_CEILING)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError):
            return soft, soft
        return soft, wanted
    return soft, soft


def end_linger(transport: asyncio.Transport) -> None:
    # close() would wait for the send buffer to drain, forever if the peer reads nothing.
    if transport.get_write_buffer_size():
        transport.abort()
    else:
        transport.close()


def peer_address(host: str) -> str:
    """The peer's address as the per-address limits count it: IPv4-mapped IPv6 folded onto
    IPv4, so that a dual-stack listener does not give one host two budgets."""
    if host.startswith("::ffff:") and "." in host:
        return host[len("::ffff:") :]
    return host


def bound_unix_socket(path: Path) -> socket.socket:
    """A Unix socket bound to ``path`` with mode SOCKET_MODE, not listening yet.

    The mode is set between bind and listen: until listen() every connect() is refused, so
    no client can slip in while the file still has the mode the umask gave it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        if socket_answers(path):
            # Another gateway serves it: taking the path over would cut that one's clients off.
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE), str(path))
        path.unlink()  # a stale socket left by a crash would make bind fail
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, SOCKET_MODE)
    except BaseException:
        sock.close()
        raise
    return sock


def socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except (TimeoutError, BlockingIOError):
            return True  # a full backlog: still somebody's live socket
        except OSError:
            return False
    return True
