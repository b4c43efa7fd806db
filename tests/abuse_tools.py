"""Attackers for the abuse tests and bench/bench_abuse.py, on raw sockets, bounded in count
and time: a password flood, silent and half-finished TLS handshakes, a client that sends
requests but never reads the answers, and a QoS 0 round-trip observer.

Attackers connect from ATTACKER (all of 127/8 is loopback on Linux), so that per-address
limits can tell them from the real users on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import errno
import ipaddress
import selectors
import socket
import ssl
import statistics
import threading
import time
from pathlib import Path

from gateway.mqtt.codec import StreamDecoder, encode
from gateway.mqtt.packets import (
    PROTOCOL_V5,
    PROTOCOL_V311,
    ConnAck,
    Connect,
    Packet,
    Publish,
    Subscribe,
    Subscription,
    Will,
)

ATTACKER = "127.0.0.2"
PINGREQ = b"\xc0\x00"


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1/localhost (EC P-256: quick to make), as
    (certfile, keyfile)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


# A TLS record header announcing a 512-byte ClientHello, and the start of one: a handshake
# the server must wait for (until its timeout) without being able to finish it.
HALF_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32)


def open_connections(
    port: int, count: int, *, source: str = ATTACKER, first_bytes: bytes = b""
) -> list[socket.socket]:
    """``count`` TCP connections from ``source`` that send ``first_bytes`` (nothing: silent)
    and then wait. Connections the server closes at once are returned too."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind((source, 0))
        sock.settimeout(10)
        try:
            sock.connect(("127.0.0.1", port))
            if first_bytes:
                sock.sendall(first_bytes)
        except OSError:
            pass  # refused or reset at once: counts as closed
        sock.setblocking(False)
        socks.append(sock)
    return socks


def wait_closed(socks: list[socket.socket], timeout: float) -> tuple[int, float]:
    """Wait until the server has closed each connection (EOF or reset); returns how many it
    closed within ``timeout`` and the seconds until the last of them was."""
    started = time.monotonic()
    last = 0.0
    closed = 0
    selector = selectors.DefaultSelector()
    for sock in socks:
        try:
            selector.register(sock, selectors.EVENT_READ)
        except (ValueError, OSError):  # already unusable
            closed += 1
    while selector.get_map() and (left := started + timeout - time.monotonic()) > 0:
        for key, _ in selector.select(min(left, 0.5)):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                continue  # a TLS alert or an MQTT packet: wait for the close itself
            selector.unregister(sock)
            closed += 1
            last = time.monotonic() - started
    selector.close()
    return closed, last


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def tls_connect(port: int, cafile: Path, client_id: str, timeout: float = 5.0) -> float:
    """A real TLS client (OpenSSL through Python's ssl) that verifies the certificate, sends
    CONNECT and waits for a successful CONNACK; the seconds it all took. (paho's loop uses
    select(), which fails once the process holds 1,024 sockets, as the attack tests do.)"""
    context = ssl.create_default_context(cafile=str(cafile))
    started = time.perf_counter()
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(connect_packet(client_id, None, None, PROTOCOL_V311))
        decoder = StreamDecoder(protocol_version=PROTOCOL_V311)
        packets: list[Packet] = []
        while not packets:
            data = sock.recv(4096)
            if not data:
                raise ConnectionError("closed before CONNACK")
            packets = decoder.feed(data)
    elapsed = time.perf_counter() - started
    ack = packets[0]
    if not isinstance(ack, ConnAck) or ack.reason_code != 0:
        raise ConnectionError(f"refused: {ack}")
    return elapsed


def connect_packet(
    client_id: str,
    username: str | None,
    password: bytes | None,
    version: int = PROTOCOL_V5,
    *,
    keep_alive: int = 60,
    will: Will | None = None,
) -> bytes:
    return encode(
        Connect(
            client_id=client_id,
            protocol_version=version,
            username=username,
            password=password,
            keep_alive=keep_alive,
            will=will,
        ),
        version,
    )


class PasswordFlood:
    """``connections`` clients from ``source`` that CONNECT with a wrong password, read the
    answer and start again, in a thread of their own, until stop(). ``tally`` counts the
    answers by CONNACK reason ("0x86" ...) and "silent" for a close without a CONNACK."""

    def __init__(
        self,
        port: int,
        *,
        connections: int = 300,
        source: str = ATTACKER,
        username: str = "alice",
        password: bytes = b"not her password",
    ) -> None:
        self.port = port
        self.connections = connections
        self.source = source
        self.packet = connect_packet("", username, password)
        self.tally: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="password-flood", daemon=True)

    def start(self) -> PasswordFlood:
        self._thread.start()
        return self

    def answers(self) -> int:
        return sum(n for key, n in self.tally.items() if key != "connect-error")

    def stop(self) -> collections.Counter[str]:
        self._stop.set()
        self._thread.join(30)
        return self.tally

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        await asyncio.gather(*(self._attacker() for _ in range(self.connections)))

    async def _attacker(self) -> None:
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, local_addr=(self.source, 0)
                )
            except OSError:
                self.tally["connect-error"] += 1
                await asyncio.sleep(0.05)
                continue
            try:
                writer.write(self.packet)
                self.tally[await self._answer(reader)] += 1
            except OSError:
                self.tally["silent"] += 1
            finally:
                writer.transport.abort()

    async def _answer(self, reader: asyncio.StreamReader) -> str:
        decoder = StreamDecoder(protocol_version=PROTOCOL_V5)
        while True:
            try:
                data = await asyncio.wait_for(reader.read(4096), 30)
            except TimeoutError:
                return "no-answer"
            if not data:
                return "silent"
            for packet in decoder.feed(data):
                if isinstance(packet, ConnAck):
                    return f"0x{packet.reason_code:02X}"


class NonReader:
    """A connected client that sends requests as fast as the server takes them and never
    reads an answer (a tiny receive buffer, so that the server's replies pile up at once)."""

    def __init__(
        self,
        port: int,
        client_id: str,
        *,
        version: int = PROTOCOL_V311,
        keep_alive: int = 60,
        will: Will | None = None,
    ) -> None:
        self.version = version
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        self.local_port: int = self.sock.getsockname()[1]
        packet = connect_packet(client_id, None, None, version, keep_alive=keep_alive, will=will)
        self.sock.sendall(packet)
        decoder = StreamDecoder(protocol_version=version)
        packets: list[Packet] = []
        while not packets:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("closed before CONNACK")
            packets = decoder.feed(data)
        ack = packets[0]
        assert isinstance(ack, ConnAck) and ack.reason_code == 0, ack
        self.sent = 0  # whole requests sent
        self._tail = b""  # the rest of a request flood() sent only the start of

    def flood(
        self, request: bytes, *, seconds: float, max_requests: int, stall: float = 1.0
    ) -> int:
        """Send ``request`` repeatedly until ``max_requests`` went out, ``seconds`` passed,
        or the server took nothing for ``stall`` seconds (it stopped reading us). Returns
        the number of whole requests sent by this call; a request cut in the middle is
        completed by finish()."""
        self.finish()
        batch = request * max(1, min(max_requests, 65536 // len(request)))
        self.sock.setblocking(False)
        started = last_progress = time.monotonic()
        written = 0
        while written < max_requests * len(request):
            now = time.monotonic()
            if now - started > seconds or now - last_progress > stall:
                break
            left = max_requests * len(request) - written
            chunk = memoryview(batch)[(written % len(batch)) :][:left]
            try:
                written += self.sock.send(chunk)
            except BlockingIOError:
                time.sleep(0.005)
                continue
            last_progress = now
        self.sock.setblocking(True)
        self.sock.settimeout(30)
        whole, part = divmod(written, len(request))
        self._tail = request[part:] if part else b""
        self.sent += whole
        return whole

    def finish(self) -> int:
        """Send the rest of a request flood() cut in the middle (once the server reads
        again); 1 if that completed a request."""
        if not self._tail:
            return 0
        self.sock.sendall(self._tail)
        self._tail = b""
        self.sent += 1
        return 1

    def read_all(self, nbytes: int, timeout: float = 30.0) -> int:
        """Read until ``nbytes`` arrived (or the timeout); the number read."""
        got = 0
        deadline = time.monotonic() + timeout
        while got < nbytes and (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                break
            if not data:
                break
            got += len(data)
        return got

    def closed_by_server(self, timeout: float) -> bool:
        """Drain what the server sent; True once it has closed or reset the connection."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(1 << 20):
                    return True
            except TimeoutError:
                return False
            except OSError as exc:
                return exc.errno in (errno.ECONNRESET, errno.EPIPE)
        return False

    def close(self) -> None:
        self.sock.close()


def subscribe_packet(packet_id: int, topic: str, version: int = PROTOCOL_V311) -> bytes:
    return encode(Subscribe(packet_id, (Subscription(topic, 0),)), version)


def qos1_publish_packet(packet_id: int, topic: str, version: int = PROTOCOL_V311) -> bytes:
    return encode(Publish(topic, b"x", qos=1, packet_id=packet_id), version)


class Observer:
    """A raw MQTT 3.1.1 client subscribed to its own topic: QoS 0 round trips."""

    def __init__(self, port: int, client_id: str = "observer") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.topic = f"observe/{client_id}"
        self.decoder = StreamDecoder(protocol_version=PROTOCOL_V311)
        self.inbox: collections.deque[Packet] = collections.deque()
        self.sock.sendall(connect_packet(client_id, None, None, PROTOCOL_V311))
        assert isinstance(self._next(5), ConnAck)
        self.sock.sendall(subscribe_packet(1, self.topic))
        self._next(5)  # SUBACK

    def _next(self, timeout: float) -> Packet:
        deadline = time.monotonic() + timeout
        while not self.inbox:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("nothing from the broker")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the broker")
            self.inbox.extend(self.decoder.feed(data))
        return self.inbox.popleft()

    def round_trip(self, timeout: float = 5.0) -> float:
        """Seconds from publishing a QoS 0 message to receiving it back."""
        started = time.perf_counter()
        self.sock.sendall(encode(Publish(self.topic, b"rt", qos=0), PROTOCOL_V311))
        while True:
            packet = self._next(timeout)
            if isinstance(packet, Publish) and packet.topic == self.topic:
                return time.perf_counter() - started

    def round_trips(self, count: int, timeout: float = 5.0) -> list[float]:
        return [self.round_trip(timeout) for _ in range(count)]

    def close(self) -> None:
        self.sock.close()


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000 if values else float("nan")
