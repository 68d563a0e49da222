"""Generate a small private CA with server and client certificates (for TLS / mTLS tests and
for ``mesh up --tls``). Uses the ``cryptography`` package; keys are EC P-256."""

from __future__ import annotations

import datetime
import ipaddress
import pathlib

__all__ = ["generate"]

VALID_DAYS = 365


def _name(cn: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: pathlib.Path, data: bytes, *, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def generate(out_dir: pathlib.Path, *, hosts: list[str] | None = None) -> dict[str, pathlib.Path]:
    """Write ca.pem, server.pem/server-key.pem, client.pem/client-key.pem; return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hosts = hosts or ["127.0.0.1", "localhost"]
    now = datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=VALID_DAYS)

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("mesh-plane CA"))
        .issuer_name(_name("mesh-plane CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": out / "ca.pem"}
    _write(paths["ca"], ca.public_bytes(serialization.Encoding.PEM))

    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))

    for role, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(f"mesh-plane {role}"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(until)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            # pods present one certificate both as servers and as clients of their peers
            .add_extension(x509.ExtendedKeyUsage([usage, ExtendedKeyUsageOID.CLIENT_AUTH
                                                  if role == "server" else ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
        )
        cert = builder.sign(ca_key, hashes.SHA256())
        paths[role] = out / f"{role}.pem"
        paths[f"{role}_key"] = out / f"{role}-key.pem"
        _write(paths[role], cert.public_bytes(serialization.Encoding.PEM))
        _write(paths[f"{role}_key"], key_pem(key), private=True)
    return paths
