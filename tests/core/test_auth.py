"""KeyRing: plain and hashed keys, the two scopes, and what a scope allows."""
from __future__ import annotations

import hashlib

import pytest

from core.auth import ADMIN, CLIENT, PUBLIC, KeyRing, allows, digest

CLIENT_KEY = "client-key-for-tests-0a1b"
ADMIN_KEY = "admin-key-for-tests-9f8e"


def test_each_key_gets_its_scope_and_the_digest_its_rate_limit_keys_on():
    ring = KeyRing([CLIENT_KEY], [ADMIN_KEY])
    assert ring.enabled
    client, admin = ring.identify(CLIENT_KEY), ring.identify(ADMIN_KEY)
    assert (client.scope, client.key_digest) == (CLIENT, digest(CLIENT_KEY))
    assert (admin.scope, admin.key_digest) == (ADMIN, digest(ADMIN_KEY))


@pytest.mark.parametrize("presented", [None, "", "wrong", CLIENT_KEY + " ", CLIENT_KEY.upper()])
def test_anything_else_has_no_scope(presented):
    access = KeyRing([CLIENT_KEY], [ADMIN_KEY]).identify(presented)
    assert access.scope is None and access.key_digest is None


def test_a_key_configured_as_its_sha256_works_as_the_plain_key():
    hashed = "sha256:" + hashlib.sha256(CLIENT_KEY.encode()).hexdigest().upper()
    ring = KeyRing([hashed], [])
    assert ring.identify(CLIENT_KEY).scope == CLIENT
    assert ring.identify(hashed).scope is None  # the digest itself is not a key


def test_no_keys_configured_means_keys_are_not_required():
    assert not KeyRing([], []).enabled


@pytest.mark.parametrize("granted, required, allowed", [
    (None, PUBLIC, True), (None, CLIENT, False), (None, ADMIN, False),
    (CLIENT, CLIENT, True), (CLIENT, ADMIN, False),
    (ADMIN, CLIENT, True), (ADMIN, ADMIN, True),
])
def test_admin_includes_client_includes_public(granted, required, allowed):
    assert allows(granted, required) is allowed
