"""API keys with two scopes, client and admin.

Keys are configured plain or as `sha256:<hex>` so plain keys need not sit in config
files. Either way only digests are kept, and a presented key is compared against
every stored digest with `hmac.compare_digest`, so neither the position of the
first differing character nor which key matched shows in the time taken.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

_HASHED = re.compile(r"^sha256:([0-9a-fA-F]{64})$")

PUBLIC, CLIENT, ADMIN = "public", "client", "admin"


def digest(key: str) -> bytes:
    """The SHA-256 digest of a key, as stored and compared."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def _stored(entries: Iterable[str]) -> tuple[bytes, ...]:
    out = []
    for entry in entries:
        match = _HASHED.match(entry)
        out.append(bytes.fromhex(match.group(1)) if match else digest(entry))
    return tuple(out)


@dataclass(frozen=True)
class Access:
    """What a request may do: its scope, and the digest its rate limit keys on."""

    scope: str | None          # None: no valid key given
    key_digest: bytes | None = None


class KeyRing:
    """The configured client and admin keys. An admin key also works as a client key."""

    def __init__(self, client_keys: Iterable[str], admin_keys: Iterable[str]) -> None:
        self._client = _stored(client_keys)
        self._admin = _stored(admin_keys)

    @property
    def enabled(self) -> bool:
        """Keys are required once any key is configured."""
        return bool(self._client or self._admin)

    def identify(self, presented: str | None) -> Access:
        """The scope of a presented key (constant time in the key's content)."""
        if not presented:
            return Access(None)
        candidate = digest(presented)
        is_admin = _matches_any(candidate, self._admin)
        is_client = _matches_any(candidate, self._client)
        if is_admin:
            return Access(ADMIN, candidate)
        if is_client:
            return Access(CLIENT, candidate)
        return Access(None)


def _matches_any(candidate: bytes, stored: tuple[bytes, ...]) -> bool:
    # No early exit: every stored digest is compared whatever matched.
    found = False
    for item in stored:
        found |= hmac.compare_digest(candidate, item)
    return found


def allows(granted: str | None, required: str) -> bool:
    """Whether a scope meets a requirement (admin ⊃ client ⊃ public)."""
    order = {None: 0, CLIENT: 1, ADMIN: 2}
    need = {PUBLIC: 0, CLIENT: 1, ADMIN: 2}[required]
    return order[granted] >= need
