"""A local development certificate for C2PA signing, made at first use and clearly named as such.

C2PA validators reject self-signed signing certificates, so this makes a two-level chain: a
development CA (EC P-256, ``CA:TRUE, pathlen:0``, keyCertSign + cRLSign) and an end-entity
certificate (EC P-256) with the profile the C2PA specification (2.x, "Certificate profile")
and c2pa-rs demand of a signing certificate:

- X.509 v3, signed with ecdsa-with-SHA256;
- keyUsage, critical, with digitalSignature (and nothing a CA would hold);
- extendedKeyUsage with id-kp-emailProtection (1.3.6.1.5.5.7.3.4) and the C2PA claim-signing
  purpose c2pa-kp-claimSigning (1.3.6.1.4.1.62558.2.1); never anyExtendedKeyUsage;
- basicConstraints CA:FALSE, subject and authority key identifiers.

Both subjects say "faceswap DEVELOPMENT ... not trusted". No trust list holds the CA, so a
C2PA reader reports the manifest as ``Valid`` with ``signingCredential.untrusted`` (never
``Trusted``), as it should. The files live in ``<folder>/dev-c2pa/`` (a sub-folder this module
owns): ``ca.pem``, ``chain.pem`` (end-entity then CA, the order C2PA signers expect) and
``key.pem`` (PKCS#8, mode 0600).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

log = logging.getLogger("provenance")

CA_NAME = "faceswap DEVELOPMENT CA \u2014 not trusted"
SIGNER_NAME = "faceswap DEVELOPMENT certificate \u2014 not trusted"
ORGANIZATION = "faceswap-serving (development)"
#: c2pa-kp-claimSigning, the C2PA extended key usage for claim signers (C2PA 2.x, 14.5.1).
C2PA_CLAIM_SIGNING = ObjectIdentifier("1.3.6.1.4.1.62558.2.1")
SUBFOLDER, CA_FILE, CHAIN_FILE, KEY_FILE = "dev-c2pa", "ca.pem", "chain.pem", "key.pem"
#: Validity of the end-entity certificate; it is made again when fewer than 7 days are left.
SIGNER_DAYS = 365
_logged: set[Path] = set()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)])


def _key_usage(signer: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=signer, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=not signer,
                         crl_sign=not signer, encipher_only=False, decipher_only=False)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_development_chain() -> tuple[bytes, bytes, bytes]:
    """A fresh development CA and end-entity certificate.

    Returns:
        (ca_pem, chain_pem, key_pem): the CA certificate; end-entity + CA certificates; the
        end-entity private key (PKCS#8 PEM, unencrypted).
    """
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder()
          .subject_name(_name(CA_NAME)).issuer_name(_name(CA_NAME))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + dt.timedelta(days=10 * SIGNER_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_key_usage(signer=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    ee = (x509.CertificateBuilder()
          .subject_name(_name(SIGNER_NAME)).issuer_name(ca.subject)
          .public_key(key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + dt.timedelta(days=SIGNER_DAYS))
          .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
          .add_extension(_key_usage(signer=True), critical=True)
          .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, C2PA_CLAIM_SIGNING]),
                         critical=False)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
          .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return _pem(ca), _pem(ee) + _pem(ca), key_pem


def _still_good(chain: Path) -> bool:
    try:
        ee = x509.load_pem_x509_certificates(chain.read_bytes())[0]
    except (OSError, ValueError, IndexError):
        return False
    return ee.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=7)


def ensure_development_credentials(folder: str | Path) -> tuple[Path, Path]:
    """The development chain and key in ``folder/dev-c2pa/``, made at first use (and when expiring).

    Safe against several processes starting at once: the files are written into a temporary
    folder beside ``dev-c2pa/`` and moved in with one rename, so a chain and its key always match;
    nothing else in ``folder`` is touched.
    Logs a WARNING once per folder and process saying that outputs are signed with an untrusted
    development certificate.

    Args:
        folder: the service's state folder (created if missing).

    Returns:
        (chain_path, key_path).

    Raises:
        OSError: the folder cannot be created or written.
    """
    folder = Path(folder) / SUBFOLDER
    chain, key = folder / CHAIN_FILE, folder / KEY_FILE
    made = False
    if not (chain.exists() and key.exists() and _still_good(chain)):
        folder.parent.mkdir(parents=True, exist_ok=True)
        ca_pem, chain_pem, key_pem = make_development_chain()
        tmp = Path(tempfile.mkdtemp(prefix=".dev-c2pa-", dir=folder.parent))
        try:
            (tmp / CA_FILE).write_bytes(ca_pem)
            (tmp / CHAIN_FILE).write_bytes(chain_pem)
            fd = os.open(tmp / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key_pem)
            if folder.exists():  # an expiring or partial set: replace it whole
                old = folder.with_name(folder.name + f".old-{os.getpid()}")
                try:
                    os.replace(folder, old)
                except OSError:  # another process moved it first
                    pass
                shutil.rmtree(old, ignore_errors=True)
            try:
                os.rename(tmp, folder)
                made = True
            except OSError:  # another process won the race: use its files
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if folder not in _logged:
        _logged.add(folder)
        log.warning("C2PA: signing with a DEVELOPMENT certificate %s %s (%s): manifests will validate but "
                    "name an untrusted signer; configure the operator's certificate chain and key for production",
                    "made in" if made else "from", folder, SIGNER_NAME)
    return chain, key
