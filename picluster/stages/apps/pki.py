"""The locally generated CA and Minio's server certificate (reference §4.10, issue #26).

restic, Velero and Longhorn reject a self-signed server certificate but accept one signed by a CA they
are given, so the controller keeps a small CA (RSA 4096, CA.pem/CA.key) and signs s3.<domain>'s
certificate with it (SAN: the name and the Minio host's address). Made once, reused afterwards; the keys
are 0600 and never leave the controller except Minio's own key, which goes to its host as a secret file.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from picluster.localfs import write_atomic

CA_NAME = "picluster CA"
VALID_DAYS = 3650


@dataclass(frozen=True)
class ServerPki:
    """The CA certificate, and the server certificate and key for one name (PEM text)."""

    ca_pem: str
    cert_pem: str
    key_pem: str

    @property
    def chain_pem(self) -> str:
        """The server certificate followed by the CA (what Longhorn's AWS_CERT wants)."""
        return self.cert_pem + self.ca_pem


def load(folder: Path, name: str) -> ServerPki | None:
    """The CA and `name`'s certificate if both were made already, else None."""
    paths = [folder / "CA.pem", folder / f"{name}.pem", folder / f"{name}.key"]
    if not all(p.is_file() for p in paths):
        return None
    ca, cert, key = (p.read_text(encoding="ascii") for p in paths)
    return ServerPki(ca, cert, key)


def ensure(folder: Path, name: str, address: str) -> ServerPki:
    """The CA and a certificate for `name` (SAN DNS:name, IP:address), made here the first time."""
    found = load(folder, name)
    if found is not None:
        return found
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    def pem_key(key: rsa.RSAPrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())

    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key_path, ca_path = folder / "CA.key", folder / "CA.pem"
    if ca_key_path.is_file() and ca_path.is_file():
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        assert isinstance(ca_key, rsa.RSAPrivateKey)
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
    else:
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        ca_cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False,
                                                key_agreement=False, key_cert_sign=True, crl_sign=True,
                                                encipher_only=False, decipher_only=False), critical=True)
                   .sign(ca_key, hashes.SHA256()))
        write_atomic(ca_key_path, pem_key(ca_key), 0o600)
        write_atomic(ca_path, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name),
                                                        x509.IPAddress(ipaddress.ip_address(address))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    write_atomic(folder / f"{name}.key", pem_key(key), 0o600)
    write_atomic(folder / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    found = load(folder, name)
    assert found is not None
    return found
