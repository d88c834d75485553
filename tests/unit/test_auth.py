"""Bearer API keys with scopes from WALLET_API_KEYS (`key=scope+scope,key2=scope`)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from web.auth import SCOPES, ApiKeys, ApiKeysInvalid, Principal

READ, WRITE, ADMIN = "wallets:read", "wallets:write", "admin"
SPEC = "k1=wallets:read+wallets:write,k2=admin"
KEY_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture(scope="module")
def api_keys() -> ApiKeys:
    return ApiKeys(SPEC)


def test_spec_with_two_keys_gives_each_its_scopes(api_keys: ApiKeys) -> None:
    assert len(api_keys) == 2
    first = api_keys.authenticate("Bearer k1")
    second = api_keys.authenticate("Bearer k2")
    assert first is not None and first.scopes == frozenset({READ, WRITE})
    assert second is not None and second.scopes == frozenset({ADMIN})


def test_spaces_around_entries_and_empty_entries_are_ignored() -> None:
    keys = ApiKeys(" k1=admin , ,k2=wallets:read,")
    assert len(keys) == 2
    assert keys.authenticate("Bearer k1") == ApiKeys("k1=admin").authenticate("Bearer k1")


@pytest.mark.parametrize("spec", ["", " ", ",", " , ,"])
def test_empty_spec_has_no_keys_and_authenticates_nobody(spec: str) -> None:
    keys = ApiKeys(spec)
    assert len(keys) == 0
    assert keys.authenticate("Bearer k1") is None
    assert keys.authenticate("Bearer ") is None


def test_every_known_scope_is_accepted() -> None:
    keys = ApiKeys("k=" + "+".join(sorted(SCOPES)))
    principal = keys.authenticate("Bearer k")
    assert principal is not None and principal.scopes == SCOPES == frozenset({READ, WRITE, ADMIN})


@pytest.mark.parametrize(
    "spec",
    [
        "k1",  # no `=`
        "=admin",  # no key
        "k1=",  # no scope
        "k1=+",  # only separators
        "k1=wallets:delete",  # unknown scope
        "k1=admin+root",  # one unknown scope among known ones
        "k1=Admin",  # scopes are case-sensitive
        "k1:admin",  # wrong separator
        "k1=admin;k2=admin",  # wrong entry separator
        "k1=admin,k2",  # second entry malformed
        "k1 = admin",  # the space makes the scope " admin"
    ],
)
def test_malformed_spec_is_refused_with_api_keys_invalid(spec: str) -> None:
    with pytest.raises(ApiKeysInvalid):
        ApiKeys(spec)


def test_api_keys_invalid_is_a_value_error_and_its_message_does_not_repeat_the_key() -> None:
    secret = "s3cr3t-key-that-must-not-leak"
    with pytest.raises(ApiKeysInvalid) as raised:
        ApiKeys(f"{secret}=wallets:delete")
    assert isinstance(raised.value, ValueError)
    assert secret not in str(raised.value)


@pytest.mark.parametrize("header", ["Bearer k1", "Bearer  k1", "Bearer k1 ", "Bearer k1\t"])
def test_bearer_header_with_a_known_key_authenticates(api_keys: ApiKeys, header: str) -> None:
    principal = api_keys.authenticate(header)
    assert principal is not None and principal.scopes == frozenset({READ, WRITE})


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "k1",  # the key without the Bearer prefix
        "Bearerk1",
        "Basic k1",
        "Token k1",
        "Bearer",
        "Bearer ",
        "Bearer k3",  # unknown key
        "Bearer k",  # a prefix of a known key
        "Bearer k1x",  # a known key plus a character
        "Bearer K1",  # keys are case-sensitive
        "Bearer wallets:read",  # a scope is not a key
        "Bearer k1=wallets:read+wallets:write",  # nor is the spec entry
    ],
)
def test_header_without_bearer_and_a_known_key_authenticates_nobody(api_keys: ApiKeys, header: str | None) -> None:
    assert api_keys.authenticate(header) is None


def test_key_id_is_eight_hex_digits_stable_for_a_key_and_distinct_between_keys(api_keys: ApiKeys) -> None:
    first = api_keys.authenticate("Bearer k1")
    second = api_keys.authenticate("Bearer k2")
    assert first is not None and second is not None
    assert re.fullmatch(r"[0-9a-f]{8}", first.key_id)
    assert re.fullmatch(r"[0-9a-f]{8}", second.key_id)
    assert first.key_id != second.key_id
    assert ApiKeys("k1=admin").authenticate("Bearer k1").key_id == first.key_id  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None)
@given(key=st.text(alphabet=KEY_CHARACTERS, min_size=9, max_size=64))
def test_key_id_and_principal_never_contain_the_key_text(key: str) -> None:
    principal = ApiKeys(f"{key}=wallets:read").authenticate(f"Bearer {key}")
    assert principal is not None
    assert key not in principal.key_id
    assert key not in repr(principal)
    assert key not in str(principal)


def test_principal_is_immutable(api_keys: ApiKeys) -> None:
    principal = api_keys.authenticate("Bearer k2")
    assert isinstance(principal, Principal)
    with pytest.raises(AttributeError):
        principal.scopes = frozenset({READ, WRITE, ADMIN})  # type: ignore[misc]
