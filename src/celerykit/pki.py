"""The kit's own CA for Redis's TLS: one recipe for the compose stack's init and the hosts' controller.

When the user brings no certificate for Redis, the kit makes a CA for the deployment's internal network
and has it sign Redis's server certificate (and, when Redis asks clients for one, a client
certificate). Clients trust that CA only (CELERYKIT_REDIS_CA_FILE) and check Redis's name against the
certificate. The CA's key stays where it was made: the compose stack's secrets directory, readable by
root only, or the Ansible controller; hosts receive certificates and their own keys.

Keys are NIST P-256 ECDSA, as the proxy's self-signed certificate (celerykit.tls): every client takes it.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from celerykit.defaults import TLS_VALID_DAYS

CA_VALID_DAYS = 3650  # the CA outlives the certificates it signs; renewing it means new ones for all
RENEW_DAYS = 30  # a certificate this close to its end is issued again


@dataclass(frozen=True)
class Pair:
    """A key and its certificate, PEM-encoded."""

    key: bytes
    cert: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    encoding, key_format = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(encoding, key_format, serialization.NoEncryption())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(common_name: str = "celerykit internal CA") -> Pair:
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Pair(_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def _alt_names(names: Sequence[str]) -> list[x509.GeneralName]:
    alt: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    return alt


def issue(ca: Pair, names: Sequence[str], *, client: bool = False, days: int = TLS_VALID_DAYS) -> Pair:
    """A certificate signed by `ca` for `names` (host names or addresses: the subjectAltName clients
    check), for a server, or for a client when `client`."""
    if not names:
        raise ValueError("a certificate needs at least one name")
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    key = _key()
    end = _now() + datetime.timedelta(days=days)  # days < 0: already expired (what the tests need)
    start = min(_now() - datetime.timedelta(minutes=5), end - datetime.timedelta(days=1))
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )  # digitalSignature
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_alt_names(names)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Pair(_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def still_good(cert: bytes, ca: bytes, names: Sequence[str]) -> bool:
    """Whether a certificate was signed by this CA, covers these names and has RENEW_DAYS left (else the
    kit issues it again)."""
    try:
        found, authority = x509.load_pem_x509_certificate(cert), x509.load_pem_x509_certificate(ca)
        found.verify_directly_issued_by(authority)
        alt = found.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    covered = {str(v) for v in alt.get_values_for_type(x509.DNSName)}
    covered |= {str(v) for v in alt.get_values_for_type(x509.IPAddress)}
    return set(names) <= covered and found.not_valid_after_utc - _now() > datetime.timedelta(days=RENEW_DAYS)


@dataclass(frozen=True)
class Files:
    """Where a CA and one certificate it issues are kept, and their modes (keys: `private`)."""

    ca: Path
    ca_key: Path
    cert: Path
    key: Path
    public: int = 0o644
    private: int = 0o600


def ensure(files: Files, names: Sequence[str], *, ca_name: str, client: bool = False) -> list[Path]:
    """The CA made on the first run and kept; its certificate for `names` issued again whenever it no
    longer fits (see still_good). Returns the files written now. One caller at a time: see ensure_locked."""
    written = []
    if not files.ca_key.exists():
        authority = make_ca(ca_name)
        _write(files.ca_key, authority.key, files.private)
        _write(files.ca, authority.cert, files.public)
        written += [files.ca_key, files.ca]
    authority = Pair(files.ca_key.read_bytes(), files.ca.read_bytes())
    if not (files.cert.exists() and files.key.exists() and still_good(files.cert.read_bytes(), authority.cert, names)):
        issued = issue(authority, names, client=client)
        _write(files.key, issued.key, files.private)
        _write(files.cert, issued.cert, files.public)
        written += [files.key, files.cert]
    return written


def ensure_locked(files: Files, names: Sequence[str], *, ca_name: str, client: bool = False) -> list[Path]:
    """ensure, holding a lock beside the CA: Ansible issues every host's certificate at once, each in its
    own process, and two that each found no CA made one each (one host's run then failed, or its
    certificate was signed by a CA that was replaced)."""
    with open(files.ca_key.with_name(files.ca_key.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return ensure(files, names, ca_name=ca_name, client=client)


def _write(path: Path, content: bytes, mode: int) -> None:
    partial = path.with_name(path.name + ".new")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    partial.replace(path)  # a reader sees the old file or the new one, never half of one
