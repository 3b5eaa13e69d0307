"""Who a client is, for the rate limit: a hash of its API key, else its address (the
address as handlers/proxies.py believes it)."""
from __future__ import annotations


def client_identity(address: str, key_digest: str | None) -> str:
    """The rate-limit identity: `key:<digest prefix>` for a valid key (its SHA-256,
    never the key itself), else `ip:<address>`."""
    if key_digest:
        return "key:" + key_digest[:32]
    return "ip:" + address
