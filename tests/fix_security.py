"""pytest plugin: a broker with a SASL_SSL listener (SCRAM-SHA-512) for tests of secured clients.

``secure_kafka`` (session) starts a broker of its own in ``<repo>/.dev/test-secure-kafka`` (the
session's PostgreSQL is shared; this broker is only Kafka), with a certificate authority and a
broker certificate (SAN ``localhost`` and ``127.0.0.1``) made here with ``cryptography`` and a
SCRAM user created when its storage is formatted. It is stopped at session end.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from leo_activation.dev import stack as devstack

REPO = Path(__file__).resolve().parent.parent
SECURE_HOME = REPO / ".dev" / "test-secure-kafka"
USER = "leo-client"


@dataclass(frozen=True)
class SecureKafka:
    bootstrap: str  # the SASL_SSL listener
    plaintext_bootstrap: str  # the same broker's plaintext listener (for the test's own checks)
    ca_location: Path
    username: str
    password: str
    home: Path

    def env(self, password: str | None = None) -> dict[str, str]:
        """The LEO_* variables a client of this listener needs."""
        return {
            "LEO_KAFKA_BOOTSTRAP": self.bootstrap,
            "LEO_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "LEO_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "LEO_KAFKA_SASL_USERNAME": self.username,
            "LEO_KAFKA_SASL_PASSWORD": self.password if password is None else password,
            "LEO_KAFKA_SSL_CA_LOCATION": str(self.ca_location),
            "LEO_TOPIC_REPLICATION_FACTOR": "1",
            "LEO_TOPIC_MIN_INSYNC_REPLICAS": "1",
        }


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificates(folder: Path) -> tuple[Path, Path]:
    """A CA and a broker certificate it signed: (the CA's PEM, the broker's key + certificate)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("leo test CA"))
        .issuer_name(_name("leo test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    broker = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, keystore = folder / "ca.pem", folder / "broker.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    keystore.write_bytes(key_pem + broker.public_bytes(serialization.Encoding.PEM))
    keystore.chmod(0o600)
    return ca_file, keystore


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[SecureKafka]:
    # A fresh broker each session: the SCRAM user exists only from the storage's format.
    devstack.down(SECURE_HOME)
    shutil.rmtree(SECURE_HOME, ignore_errors=True)
    tls = SECURE_HOME / "tls"
    tls.mkdir(parents=True)
    ca_file, keystore = _certificates(tls)
    password = secrets.token_urlsafe(18)
    listener = devstack.SaslListener(_free_port(), str(keystore), {USER: password})
    devstack.start_kafka(SECURE_HOME, sasl=listener)
    try:
        yield SecureKafka(
            bootstrap=f"127.0.0.1:{listener.port}",
            plaintext_bootstrap=devstack.endpoints(SECURE_HOME).kafka_bootstrap,
            ca_location=ca_file,
            username=USER,
            password=password,
            home=SECURE_HOME,
        )
    finally:
        devstack.down(SECURE_HOME)
