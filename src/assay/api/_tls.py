"""The server's TLS certificate: the user's own, or a self-signed one generated once under the data directory.

Agents do not trust a CA for this server: they pin the SHA-256 fingerprint of the certificate (its DER bytes),
which the server prints at start and which the deploy command carries. A generated certificate is therefore
kept (not regenerated per start), so a pinned agent keeps working across restarts.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from assay.errors import ConfigError
from assay.storage._private import PRIVATE_FILE, private_dir

GENERATED_CERT = "tls-cert.pem"
GENERATED_KEY = "tls-key.pem"
VALIDITY_DAYS = 3650  # pinned, not CA-validated: expiry would only break agents that already trust it


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    fingerprint: str  # sha256 of the certificate's DER bytes, lowercase hex
    generated: bool  # created by this start (first use of --tls)


def fingerprint_of(cert_pem: bytes, where: Path) -> str:
    """The SHA-256 of the first certificate in a PEM file (what the agent compares against)."""
    text = cert_pem.decode("ascii", "replace")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        raise ConfigError(f"{where}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")
    try:
        der = ssl.PEM_cert_to_DER_cert(text[start : stop + len(end)])
    except ValueError as exc:
        raise ConfigError(f"{where}: the PEM certificate does not decode: {exc}") from exc
    return hashlib.sha256(der).hexdigest()


def _sans(host: str) -> list[str]:
    names = ["localhost", "127.0.0.1"]
    if host and host not in names and host not in ("0.0.0.0", "::"):
        names.append(host)
    return names


def generate(cert_path: Path, key_path: Path, host: str) -> None:
    """A self-signed ECDSA P-256 certificate whose SAN covers ``host``, 127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in _sans(host):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"assay server {host}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # The key is written through a descriptor opened 0600 (O_EXCL): it is never readable by others, not
    # even between a write and a chmod.
    tmp = key_path.with_name(key_path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    tmp.replace(key_path)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def load(cert: Path | None, key: Path | None, data_dir: Path, host: str) -> TlsFiles:
    """The user's certificate and key when both are given, else the generated pair (made on first use)."""
    if (cert is None) != (key is None):
        raise ConfigError("--tls-cert and --tls-key go together: give both, or neither for a generated pair")
    generated = False
    if cert is None or key is None:
        private_dir(data_dir)
        cert, key = data_dir / GENERATED_CERT, data_dir / GENERATED_KEY
        if not (cert.is_file() and key.is_file()):
            generate(cert, key, host)
            generated = True
    for path in (cert, key):
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
    try:
        fingerprint = fingerprint_of(cert.read_bytes(), cert)
        # Load them as uvicorn will, so a mismatched or unreadable pair is a clear error before binding.
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ConfigError(f"{cert} / {key}: not a usable certificate and key: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{exc.filename}: cannot read: {exc.strerror}") from exc
    return TlsFiles(cert, key, fingerprint, generated)
