"""The upstream bridge over TLS with a password (and a client certificate) to a real Mosquitto,
with certificates the test makes; and what it says when the broker is not who it should be."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, wait_for
from mosquitto import Mosquitto, available
from paho_helpers import Client
from upstream_helpers import UpstreamThreadGateway, start_thread_gateway, upstream

from gateway.upstream.settings import UpstreamTls

pytestmark = pytest.mark.skipif(not available(), reason="needs Debian's mosquitto")


class Pki:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self.directory = directory
        self.name = name
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_cert = self._cert(f"{name} test CA", self.ca_key, None, ca=True)
        self.cafile = self._write(f"{name}.pem", self.ca_cert)

    def _cert(self, cn: str, key: Any, issuer: Any, *, ca: bool = False, san: bool = False) -> Any:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.subject if issuer is not None else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return builder.sign(self.ca_key if issuer is not None else key, hashes.SHA256())

    def _write(self, filename: str, cert: Any) -> Path:
        from cryptography.hazmat.primitives.serialization import Encoding

        path = self.directory / filename
        path.write_bytes(cert.public_bytes(Encoding.PEM))
        return path

    def _write_key(self, filename: str, key: Any) -> Path:
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
        )

        path = self.directory / filename
        path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        path.chmod(0o600)
        return path

    def issue(self, cn: str, *, server: bool) -> tuple[Path, Path]:
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._cert(cn, key, self.ca_cert, san=server)
        return self._write(f"{self.name}-{cn}.pem", cert), self._write_key(
            f"{self.name}-{cn}.key", key
        )


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        try:
            thing.stop() if isinstance(thing, UpstreamThreadGateway) else thing.kill()
        except Exception:
            pass


def tls_mosquitto(tmp_path: Path, pki: Pki, *, client_certs: bool = False) -> Mosquitto:
    certfile, keyfile = pki.issue("broker", server=True)
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "site1", "s3cret pass"],
        check=True,
        capture_output=True,
    )
    extra = [
        f"cafile {pki.cafile}",
        f"certfile {certfile}",
        f"keyfile {keyfile}",
        f"password_file {passwords}",
    ]
    if client_certs:
        extra.append("require_certificate true")
    return Mosquitto(tmp_path, extra=extra, allow_anonymous=False).start()


def cloud_client(up: Mosquitto, pki: Pki, client_id: str) -> Client:
    client = Client(up.port, client_id, username="site1", password="s3cret pass", connect=False)
    certfile, keyfile = pki.issue(client_id, server=False)
    client.c.tls_set(ca_certs=str(pki.cafile), certfile=str(certfile), keyfile=str(keyfile))
    client.connect()
    return client


def test_tls_and_password_both_ways(tmp_path: Path, cleanup: list[Any]) -> None:
    pki = Pki(tmp_path)
    up = tls_mosquitto(tmp_path, pki)
    cleanup.append(up)
    secret = tmp_path / "upstream.secret"
    secret.write_text("s3cret pass\n")
    secret.chmod(0o600)
    port = free_port()
    config = upstream(
        up.port, tls=UpstreamTls(cafile=pki.cafile), username="site1", password_file=secret
    )
    gw = start_thread_gateway(tmp_path, port, [config])
    cleanup.append(gw)
    assert gw.wait_state("connected"), gw.status()
    cloud = cloud_client(up, pki, "cloud-app")
    cleanup.append(cloud)
    cloud.subscribe("site1/gw/meter/#", 1)
    local = Client(port, "local-app")
    cleanup.append(local)
    local.subscribe("gw/+/set", 1)
    local.publish("gw/meter/state", "42", 1)
    m = cloud.get(timeout=10)
    assert (m.topic, m.payload) == ("site1/gw/meter/state", b"42")
    cloud.publish("site1/gw/meter/set", "reset", 1)
    assert local.get(timeout=10).payload == b"reset"


def test_a_client_certificate_is_presented(tmp_path: Path, cleanup: list[Any]) -> None:
    pki = Pki(tmp_path)
    up = tls_mosquitto(tmp_path, pki, client_certs=True)
    cleanup.append(up)
    certfile, keyfile = pki.issue("edge", server=False)
    port = free_port()
    with_cert = upstream(
        up.port,
        tls=UpstreamTls(cafile=pki.cafile, certfile=certfile, keyfile=keyfile),
        username="site1",
        password=b"s3cret pass",
    )
    gw = start_thread_gateway(tmp_path, port, [with_cert])
    cleanup.append(gw)
    assert gw.wait_state("connected"), gw.status()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong CA", "TLS: certificate verify failed"),
        ("wrong password", "CONNECT refused"),
        ("plain TCP to a TLS port", ""),
    ],
)
def test_a_broker_that_is_not_who_it_should_be_is_refused_and_said(
    tmp_path: Path, cleanup: list[Any], case: str, expected: str
) -> None:
    pki = Pki(tmp_path)
    up = tls_mosquitto(tmp_path, pki)
    cleanup.append(up)
    rogue = Pki(tmp_path, "rogue")
    fields: dict[str, Any] = {"username": "site1", "password": b"s3cret pass"}
    if case == "wrong CA":
        fields["tls"] = UpstreamTls(cafile=rogue.cafile)
    elif case == "wrong password":
        fields["tls"] = UpstreamTls(cafile=pki.cafile)
        fields["password"] = b"guess"
    port = free_port()
    gw = start_thread_gateway(tmp_path, port, [upstream(up.port, **fields)])
    cleanup.append(gw)
    assert wait_for(lambda: gw.status()["last_error"] is not None, 15)
    status = gw.status()
    assert status["state"] != "connected"
    assert expected in str(status["last_error"]), status
    # The gateway goes on serving its own clients.
    Client(port, "still-here").disconnect()


def test_insecure_skips_the_certificate_check(tmp_path: Path, cleanup: list[Any]) -> None:
    pki = Pki(tmp_path)
    up = tls_mosquitto(tmp_path, pki)
    cleanup.append(up)
    config = upstream(
        up.port, tls=UpstreamTls(insecure=True), username="site1", password=b"s3cret pass"
    )
    gw = start_thread_gateway(tmp_path, free_port(), [config])
    cleanup.append(gw)
    assert gw.wait_state("connected"), gw.status()
