"""Approval keys and trust from configuration, and the development keyring made when none is.

    COUNTERPOINT_KEYS_DIR   private keys, one PEM (PKCS#8, Ed25519) per signer role:
                            synthesis.pem, approvals.pem (the desk), gateway.pem, cli.pem
                            (default $COUNTERPOINT_HOME/keys); a process loads those present
    COUNTERPOINT_TRUST      the trust file (default $COUNTERPOINT_KEYS_DIR/trust.json):

        {"keys": [{"name": "synthesis", "public_key": "<base64 of the 32 raw bytes>",
                   "may_sign": ["proposal", "policy"]},
                  {"name": "alice", "public_key": "...", "may_sign": ["person"],
                   "identity": "alice"}, ...]}

A key's id is derived from its public key (`key_id_of`); a `key_id` in an entry must match it.

Development default: while the trust file is the default one and is absent, or is one
Counterpoint generated (it says so in `generated_by`), every process makes what is missing,
under a lock: a key per role (mode 0600, in a 0700 directory, never replacing a file) and the
trust file listing them. A trust file you wrote yourself, or one named by COUNTERPOINT_TRUST,
is only ever read: Counterpoint creates nothing then.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Final

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from counterpoint.agents.signing import (
    ROLES,
    Keyring,
    Signer,
    Trust,
    TrustedKey,
    key_id_of,
    public_b64,
)
from counterpoint.schemas.approvals import SignedKind

GENERATED: Final = "counterpoint: development keys, made because no trust file existed"


class TrustEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1)]
    public_key: str
    may_sign: Annotated[list[SignedKind], Field(min_length=1)]
    identity: Annotated[str, Field(min_length=1)] | None = None
    key_id: str | None = None


class TrustFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    generated_by: str | None = None
    keys: list[TrustEntry]


class KeyConfigError(ValueError):
    """A key or trust file that cannot be used; the message names the file and the problem."""


def parse_trust(path: Path) -> Trust:
    try:
        parsed = TrustFile.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise KeyConfigError(f"{path}: cannot read the trust file: {exc.strerror}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}"
                             for e in exc.errors())
        raise KeyConfigError(f"{path}: {problems}") from exc
    keys = []
    for i, entry in enumerate(parsed.keys):
        try:
            public = Ed25519PublicKey.from_public_bytes(
                base64.b64decode(entry.public_key, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise KeyConfigError(f"{path}: keys.{i}.public_key: not the base64 of a 32-byte "
                                 f"Ed25519 public key ({exc})") from exc
        kid = key_id_of(public)
        if entry.key_id is not None and entry.key_id != kid:
            raise KeyConfigError(f"{path}: keys.{i}.key_id: {entry.key_id!r} is not the id of "
                                 f"its public key ({kid})")
        keys.append(TrustedKey(kid, entry.name, public, frozenset(entry.may_sign),
                               entry.identity))
    try:
        return Trust(keys)
    except ValueError as exc:
        raise KeyConfigError(f"{path}: {exc}") from exc


def load_signer(path: Path, name: str) -> Signer:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyConfigError(f"{path}: cannot read the key: {exc.strerror}") from exc
    except (ValueError, TypeError) as exc:
        raise KeyConfigError(f"{path}: not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyConfigError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return Signer(name, key)


def load_keyring(keys_dir: Path, trust_path: Path | None = None) -> Keyring:
    """The keyring of this process: the trust file, and the role keys found in `keys_dir`.
    With `trust_path` None (the default file), the development keyring is made if needed."""
    if trust_path is None:
        trust_path = keys_dir / "trust.json"
        ensure_dev_keys(keys_dir, trust_path)
    trust = parse_trust(trust_path)
    signers = {role: load_signer(keys_dir / f"{role}.pem", role) for role in ROLES
               if (keys_dir / f"{role}.pem").exists()}
    return Keyring(trust, signers, where=str(keys_dir))


@contextmanager
def _locked(keys_dir: Path) -> Iterator[None]:
    with open(keys_dir / ".lock", "a") as lock:  # agents starting together wait their turn
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _create(path: Path, data: bytes) -> None:
    """Write a new file, 0600; never replaces one (O_EXCL)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_dev_keys(keys_dir: Path, trust_path: Path) -> bool:
    """Make the development keys and trust unless a trust file someone else wrote is there.
    True when the development keyring is in use."""
    if trust_path.exists() and not _generated(trust_path):
        return False
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(keys_dir):
        if trust_path.exists() and not _generated(trust_path):
            return False
        entries = []
        for role, kinds in ROLES.items():
            pem = keys_dir / f"{role}.pem"
            if not pem.exists():
                _create(pem, Ed25519PrivateKey.generate().private_bytes(
                    Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
            public = load_signer(pem, role).private.public_key()
            entries.append(TrustEntry(name=role, public_key=public_b64(public),
                                      may_sign=sorted(kinds), key_id=key_id_of(public)))
        text = orjson.dumps(TrustFile(generated_by=GENERATED, keys=entries).model_dump(
            exclude_none=True), option=orjson.OPT_INDENT_2)
        if not trust_path.exists() or trust_path.read_bytes() != text:
            tmp = trust_path.with_name(trust_path.name + ".tmp")
            tmp.unlink(missing_ok=True)
            _create(tmp, text)
            os.replace(tmp, trust_path)  # only ever replaces a trust file we generated
    return True


def _generated(path: Path) -> bool:
    try:
        return bool(orjson.loads(path.read_bytes()).get("generated_by") == GENERATED)
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return False
