"""Ed25519 signatures on approval events, and the trust that says who may sign what.

A signature covers a canonical encoding of the event: the bytes of DOMAIN, then the JSON
(keys sorted, no whitespace) of `{"kind", "key_id", "event"}`, where `event` is the event's
own JSON without its `signature` field. The kind and key id are inside the signed bytes, so a
proposal's signature cannot pass for a decision's, nor one key's for another's. The event
JSON is what the bus publishes (pydantic's JSON mode), so a verifier recomputes the same bytes
from the decoded event.

Trust maps a key id (derived from the public key, `key_id_of`) to the public key, the kinds
it may sign and, for a person's own key, the one identity it may sign as. Keys and trust come
from configuration (infra/approval_keys.py); `Keyring.ephemeral()` makes a fresh in-memory
set for tests and for contexts built without configuration.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel

from counterpoint.bus.errors import CounterpointError
from counterpoint.schemas.approvals import Signature, SignedKind

DOMAIN: Final = b"counterpoint.approvals.v1\n"

# Who signs what in Counterpoint's own processes: the signer role names the key file.
ROLES: Final[Mapping[str, frozenset[SignedKind]]] = {
    "synthesis": frozenset({"proposal", "policy"}),
    "approvals": frozenset({"expiry"}),  # the desk
    "gateway": frozenset({"person"}),  # vouches for the identity a token maps to
    "cli": frozenset({"person"}),
}

M = TypeVar("M", bound=BaseModel)


class Refused(CounterpointError):
    """An approval event that must not be acted on; `reason` goes to the dead letter."""

    reason = "approval-refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:24]


def public_b64(public: Ed25519PublicKey) -> str:
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def signed_bytes(kind: SignedKind, key_id: str, event: BaseModel) -> bytes:
    body = event.model_dump(mode="json", exclude={"signature"})
    return DOMAIN + orjson.dumps({"kind": kind, "key_id": key_id, "event": body},
                                 option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    name: str
    public: Ed25519PublicKey
    may_sign: frozenset[SignedKind]
    identity: str | None = None  # set: every signature by this key is this person's


@dataclass(frozen=True)
class Signer:
    name: str
    private: Ed25519PrivateKey
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", key_id_of(self.private.public_key()))

    def seal(self, kind: SignedKind, event: M) -> M:
        """`event` with its `signature` set: signed as `kind` by this key."""
        raw = self.private.sign(signed_bytes(kind, self.key_id, event))
        signature = Signature(key_id=self.key_id, value=base64.b64encode(raw).decode())
        return event.model_copy(update={"signature": signature})


class Trust:
    def __init__(self, keys: Iterable[TrustedKey]) -> None:
        self.keys: dict[str, TrustedKey] = {}
        for key in keys:
            if key.key_id in self.keys:
                raise ValueError(f"key {key.key_id} ({key.name}) is listed twice")
            self.keys[key.key_id] = key

    def check(self, kind: SignedKind, event: BaseModel, what: str) -> TrustedKey:
        """The trusted key that signed `event` as `kind`; Refused saying why not."""
        signature = getattr(event, "signature", None)
        if not isinstance(signature, Signature):
            raise Refused("unsigned", f"{what} carries no signature")
        key = self.keys.get(signature.key_id)
        if key is None:
            raise Refused("untrusted-key", f"{what} is signed by key {signature.key_id!r}, "
                          "which this process's trust does not list")
        if kind not in key.may_sign:
            raise Refused("kind-not-trusted", f"{what} is signed as {kind} by key "
                          f"{key.key_id} ({key.name}), which may sign only "
                          f"{', '.join(sorted(key.may_sign))}")
        try:
            raw = base64.b64decode(signature.value, validate=True)
            key.public.verify(raw, signed_bytes(kind, key.key_id, event))
        except (InvalidSignature, binascii.Error, ValueError) as exc:
            raise Refused("bad-signature", f"{what}: the signature of key {key.key_id} "
                          f"({key.name}) does not match its content: altered or forged") from exc
        return key


@dataclass(frozen=True)
class Keyring:
    """What one process verifies with (trust) and signs with (its roles' keys)."""

    trust: Trust
    signers: Mapping[str, Signer] = field(default_factory=dict)
    where: str = "an in-memory keyring"

    def signer(self, role: str) -> Signer:
        try:
            return self.signers[role]
        except KeyError:
            raise LookupError(f"no signing key for {role} in {self.where} (expected "
                              f"{role}.pem)") from None

    @classmethod
    def ephemeral(cls) -> Keyring:
        """Fresh keys for every role, trusted for the role's kinds: one keyring per test."""
        signers = {role: Signer(role, Ed25519PrivateKey.generate()) for role in ROLES}
        trust = Trust(TrustedKey(s.key_id, role, s.private.public_key(), ROLES[role])
                      for role, s in signers.items())
        return cls(trust, signers)
