"""moto's S3 server over HTTPS on 127.0.0.1, for clients that speak nothing else (pgBackRest): a certificate
authority made for the run, a server certificate it signed for 127.0.0.1, and the CA file clients trust."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import ThreadedWSGIServer

from backup_pipelines.ports import free_port

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Certificates:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(folder: Path) -> Certificates:
    """Write a CA certificate and a server certificate for 127.0.0.1 signed by it (with its key) to `folder`."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("backup-pipelines test CA"))
        .issuer_name(_name("backup-pipelines test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder()
        .subject_name(_name(LOOPBACK))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                # pgBackRest 2.45 matches its host against DNS names only, Python's ssl an address against IP ones
                [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName(LOOPBACK)]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    files.key_file.chmod(0o600)
    return files


class _ClosingTlsServer(ThreadedWSGIServer):
    """Werkzeug's threaded server, ending each TLS connection with a close_notify: its handler speaks HTTP/1.0
    and closes after every response, and OpenSSL 3 clients (pgBackRest) take a bare close for a truncation."""

    def shutdown_request(self, request: Any) -> None:
        with contextlib.suppress(OSError, ValueError):
            request.settimeout(5)
            request.unwrap()
        super().shutdown_request(request)


class TlsMotoServer(ThreadedMotoServer):
    """ThreadedMotoServer serving HTTPS with `certificates`. It shares moto's state with any other moto server
    of this process."""

    def __init__(self, certificates: Certificates) -> None:
        self.port = free_port()
        super().__init__(ip_address=LOOPBACK, port=self.port, verbose=False)
        self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ssl.load_cert_chain(certificates.cert_file, certificates.key_file)

    def _server_entry(self) -> None:
        app: Any = DomainDispatcherApplication(create_backend_app)
        self._server = _ClosingTlsServer(LOOPBACK, self.port, app, handler=MotoRequestHandler, ssl_context=self._ssl)
        self._server_ready_event.set()
        self._server.serve_forever()
