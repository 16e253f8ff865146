"""Key pairs for sealing: the workers hold the private keys, whoever starts a run needs only the public one.

A sealed box is X25519 key agreement with a fresh key per box, HKDF-SHA256 and AES-256-GCM, written on one line:

```text
rpk1.<key id>.<ephemeral public key>.<nonce>.<ciphertext and tag>      (each part base64url, unpadded)
```
- key id: the first 8 bytes of SHA-256 of the recipient's raw public key (which private key opens it);
- the AES key: HKDF-SHA256 of the X25519 shared secret, salt = ephemeral public key + recipient public key
  (raw, 32 bytes each), info = `restful-etl sealed credentials v1`, 32 bytes;
- nonce: 12 random bytes; associated data: `rpk1.<key id>`.

Any client with a crypto library can seal with the published public key (`restful-etl-public:<base64url of
the raw 32 bytes>`); `seal` in flows/sealing.py does it in Python. Keys come from the environment:
`RESTFUL_ETL_PRIVATE_KEY` (or a file named by `RESTFUL_ETL_PRIVATE_KEY_FILE`, one key a line) holds the
workers' private keys, the first the current one; `RESTFUL_ETL_PUBLIC_KEY` (or `RESTFUL_ETL_PUBLIC_KEY_FILE`)
the public key a caller seals with, or the Prefect Variable `restful-etl-public-key` where it is published.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from prefect_restful_etl.tasks.engine.exceptions import ConfigError

PRIVATE_KEY_ENV = "RESTFUL_ETL_PRIVATE_KEY"
PRIVATE_KEY_FILE_ENV = "RESTFUL_ETL_PRIVATE_KEY_FILE"
PUBLIC_KEY_ENV = "RESTFUL_ETL_PUBLIC_KEY"
PUBLIC_KEY_FILE_ENV = "RESTFUL_ETL_PUBLIC_KEY_FILE"
PUBLIC_KEY_VARIABLE = "restful-etl-public-key"
BOX = "rpk1"
_PUBLIC, _PRIVATE = "restful-etl-public:", "restful-etl-private:"
_INFO = b"restful-etl sealed credentials v1"


@dataclass(frozen=True)
class KeyPair:
    private: str
    public: str


def generate_key_pair() -> KeyPair:
    key = X25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return KeyPair(private=_PRIVATE + _b64(raw), public=_public_text(key.public_key()))


def public_key_of(private: str) -> str:
    return _public_text(_private_key(private, PRIVATE_KEY_ENV).public_key())


def key_id(public: str) -> str:
    return _b64(hashlib.sha256(_raw_public(_public_key(public, PUBLIC_KEY_ENV))).digest()[:8])


def is_box(token: str) -> bool:
    return token.strip().startswith(f"{BOX}.")


def box_seal(plain: bytes, public: str) -> str:
    recipient = _public_key(public, PUBLIC_KEY_ENV)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw, recipient_raw = _raw_public(ephemeral.public_key()), _raw_public(recipient)
    kid = key_id(public)
    nonce = os.urandom(12)
    secret = _derive(ephemeral.exchange(recipient), ephemeral_raw, recipient_raw)
    sealed = AESGCM(secret).encrypt(nonce, plain, f"{BOX}.{kid}".encode())
    return ".".join([BOX, kid, _b64(ephemeral_raw), _b64(nonce), _b64(sealed)])


def box_open(token: str, privates: list[str]) -> bytes:
    """Open with whichever private key the box names; a ConfigError that quotes neither box nor key."""
    parts = token.strip().split(".")
    if len(parts) != 5 or parts[0] != BOX:
        raise ConfigError("sealed_credentials", "is not a sealed box (damaged?)")
    _, kid, ephemeral_text, nonce_text, sealed_text = parts
    keys = {key_id(public_key_of(private)): _private_key(private, PRIVATE_KEY_ENV) for private in privates}
    if not keys:
        raise ConfigError(PRIVATE_KEY_ENV, "is not set: opening credentials sealed with a public key needs it")
    key = keys.get(kid)
    if key is None:
        raise ConfigError("sealed_credentials", f"were sealed for a key that {PRIVATE_KEY_ENV} does not hold")
    try:
        ephemeral = X25519PublicKey.from_public_bytes(_unb64(ephemeral_text))
        secret = _derive(key.exchange(ephemeral), _raw_public(ephemeral), _raw_public(key.public_key()))
        return AESGCM(secret).decrypt(_unb64(nonce_text), _unb64(sealed_text), f"{BOX}.{kid}".encode())
    except (ValueError, InvalidTag):
        raise ConfigError("sealed_credentials", "cannot be opened (damaged, or sealed for another key)") from None


def private_keys_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The workers' private keys, current first: `RESTFUL_ETL_PRIVATE_KEY` (comma-separated), then the file."""
    environ = os.environ if environ is None else environ
    keys = [k.strip() for k in environ.get(PRIVATE_KEY_ENV, "").split(",") if k.strip()]
    path = environ.get(PRIVATE_KEY_FILE_ENV, "").strip()
    if path:
        keys += [line.strip() for line in _read(path, PRIVATE_KEY_FILE_ENV).splitlines() if line.strip()]
    return keys


def public_key_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The key to seal with from the environment: `RESTFUL_ETL_PUBLIC_KEY` or its file, else the public key of
    the current private key (on a worker's machine); None when there is none."""
    environ = os.environ if environ is None else environ
    text = environ.get(PUBLIC_KEY_ENV, "").strip()
    path = environ.get(PUBLIC_KEY_FILE_ENV, "").strip()
    if not text and path:
        text = _read(path, PUBLIC_KEY_FILE_ENV).strip()
    if text:
        _public_key(text, PUBLIC_KEY_ENV if environ.get(PUBLIC_KEY_ENV) else PUBLIC_KEY_FILE_ENV)
        return text
    privates = private_keys_from_env(environ)
    return public_key_of(privates[0]) if privates else None


async def published_public_key() -> str | None:
    """The public key published as the Prefect Variable `restful-etl-public-key`, if any."""
    from prefect.variables import Variable

    value: Any = await Variable.aget(PUBLIC_KEY_VARIABLE, default="")
    if value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"Prefect Variable {PUBLIC_KEY_VARIABLE}", "is not a public key")
    _public_key(value, f"Prefect Variable {PUBLIC_KEY_VARIABLE}")
    return value


async def publish_public_key(public: str) -> None:
    """Publish (or replace) the public key callers seal with as the Prefect Variable `restful-etl-public-key`."""
    from prefect.variables import Variable

    _public_key(public, PUBLIC_KEY_ENV)
    await Variable.aset(PUBLIC_KEY_VARIABLE, public, tags=["restful-etl"], overwrite=True)


def _derive(shared: bytes, ephemeral_raw: bytes, recipient_raw: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral_raw + recipient_raw, info=_INFO).derive(shared)


def _public_text(key: X25519PublicKey) -> str:
    return _PUBLIC + _b64(_raw_public(key))


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _public_key(text: str, where: str) -> X25519PublicKey:
    try:
        if not text.strip().startswith(_PUBLIC):
            raise ValueError
        return X25519PublicKey.from_public_bytes(_unb64(text.strip()[len(_PUBLIC) :]))
    except ValueError:
        raise ConfigError(where, f"is not a public key ({_PUBLIC}...: `restful-etl keygen`)") from None


def _private_key(text: str, where: str) -> X25519PrivateKey:
    try:
        if not text.strip().startswith(_PRIVATE):
            raise ValueError
        return X25519PrivateKey.from_private_bytes(_unb64(text.strip()[len(_PRIVATE) :]))
    except ValueError:
        raise ConfigError(where, f"is not a private key ({_PRIVATE}...: `restful-etl keygen`)") from None


def _read(path: str, where: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as ex:
        raise ConfigError(where, f"names a file that cannot be read ({ex.strerror})") from None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise ValueError("not base64url") from None
