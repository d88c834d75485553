"""What the processor accepts from a topic: decoded commands with well-formed identifiers, keyed by wallet."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from app import identity
from app.codec import CodecError, CommandCodec
from app.domain import commands as c
from app.domain.commands import COMMAND_TYPES, INTERNAL_COMMAND_TYPES, CommandBase
from app.intake import (
    INTERNAL_KIND_REFUSED,
    INVALID_FIELD,
    KEY_MISMATCH,
    TEXT_LENGTH_MAX,
    accept,
    fingerprint,
    validate,
)

NOW_MS = 1_700_000_000_000
WALLET = "w1"
KEY = WALLET.encode()


def valid_command_of_each_kind() -> list[CommandBase]:
    envelope = {"wallet_id": WALLET, "timestamp_ms": NOW_MS}
    return [
        c.OpenWallet(command_id="c-open", **envelope, owner_id="alice", currency="EUR"),
        c.Deposit(command_id="c-dep", **envelope, amount_minor=100, currency="EUR", reference="r", description="d"),
        c.Withdraw(command_id="c-wd", **envelope, amount_minor=100, currency="EUR"),
        c.Transfer(command_id="t-1", **envelope, destination_wallet_id="w2", amount_minor=100, currency="EUR"),
        c.TransferCredit(command_id=identity.credit_command_id("w0", "t-1", NOW_MS), **envelope, transfer_id="t-1",
                         source_wallet_id="w0", amount_minor=100, currency="EUR"),
        c.TransferRefund(command_id=identity.refund_command_id(WALLET, "t-1", NOW_MS), **envelope, transfer_id="t-1",
                         destination_wallet_id="w2", amount_minor=100, currency="EUR", reason_code="WALLET_CLOSED"),
        c.PlaceHold(command_id="c-hold", **envelope, hold_id="h1", amount_minor=100, currency="EUR",
                    expires_at_ms=NOW_MS + 1),
        c.CaptureHold(command_id="c-cap", **envelope, hold_id="h1"),
        c.ReleaseHold(command_id="c-rel", **envelope, hold_id="h1", reason="EXPIRED"),
        c.Freeze(command_id="c-freeze", **envelope, reason="review"),
        c.Unfreeze(command_id="c-unfreeze", **envelope),
        c.Close(command_id="c-close", **envelope),
    ]


PUBLIC_COMMANDS = [cmd for cmd in valid_command_of_each_kind() if not isinstance(cmd, INTERNAL_COMMAND_TYPES)]
INTERNAL_COMMANDS = [cmd for cmd in valid_command_of_each_kind() if isinstance(cmd, INTERNAL_COMMAND_TYPES)]


def kind_of(command: CommandBase) -> str:
    return type(command).__name__


def refusal_code(command: CommandBase, key: bytes | None = KEY, *, public: bool = True) -> str:
    with pytest.raises(CodecError) as raised:
        validate(command, key, public=public)
    return raised.value.code


@pytest.fixture(scope="module")
def codec() -> CommandCodec:
    return CommandCodec(None, "wallet.commands")


def test_fixture_covers_every_command_kind() -> None:
    assert {type(cmd) for cmd in valid_command_of_each_kind()} == set(COMMAND_TYPES)
    assert {type(cmd) for cmd in INTERNAL_COMMANDS} == {c.TransferCredit, c.TransferRefund}


# --- public and internal kinds ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", INTERNAL_COMMANDS, ids=kind_of)
def test_internal_kind_on_the_public_topic_is_refused(command: CommandBase) -> None:
    assert refusal_code(command, public=True) == INTERNAL_KIND_REFUSED


@pytest.mark.parametrize("command", INTERNAL_COMMANDS, ids=kind_of)
def test_internal_kind_on_the_internal_topic_is_accepted(command: CommandBase) -> None:
    validate(command, KEY, public=False)


@pytest.mark.parametrize("command", PUBLIC_COMMANDS, ids=kind_of)
def test_public_kind_is_accepted_on_the_public_topic_and_refused_on_the_internal_one(command: CommandBase) -> None:
    validate(command, KEY, public=True)
    assert refusal_code(command, public=False) == identity.INTERNAL_ID_MISMATCH


def test_expiry_release_under_its_internal_id_is_accepted_on_the_internal_topic_only() -> None:
    release = c.ReleaseHold(command_id=identity.expiry_command_id(WALLET, "h1", NOW_MS), wallet_id=WALLET,
                            timestamp_ms=NOW_MS, hold_id="h1", reason="EXPIRED")
    validate(release, KEY, public=False)
    assert refusal_code(release, public=True) == identity.RESERVED_COMMAND_ID


def test_command_without_a_key_is_accepted_and_routed_by_its_wallet_id() -> None:
    validate(PUBLIC_COMMANDS[1], None, public=True)


# --- identifiers and texts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wallet_id", ["", "a" * 65, "a/b", "a b", " w1", "w1 ", "w1\n", "w.1", "w:1", "wallet\u00e9", "\u0661"],
    ids=["empty", "65-chars", "slash", "space", "leading-space", "trailing-space", "newline", "dot", "colon",
         "non-ascii-letter", "non-ascii-digit"],
)
def test_bad_wallet_id_is_refused_as_invalid_field(wallet_id: str) -> None:
    command = c.Deposit(command_id="c1", wallet_id=wallet_id, timestamp_ms=NOW_MS, amount_minor=1, currency="EUR")
    assert refusal_code(command, wallet_id.encode()) == INVALID_FIELD


@pytest.mark.parametrize("wallet_id", ["a", "a" * 64, "W_1-x", "0"])
def test_wallet_id_of_letters_digits_dash_underscore_up_to_64_is_accepted(wallet_id: str) -> None:
    command = c.Deposit(command_id="c1", wallet_id=wallet_id, timestamp_ms=NOW_MS, amount_minor=1, currency="EUR")
    validate(command, wallet_id.encode(), public=True)


@pytest.mark.parametrize("key", [b"", b"w2", b"W1", b"w1 ", b"w1\x00"])
def test_key_that_is_not_the_wallet_id_is_refused_as_key_mismatch(key: bytes | None) -> None:
    assert refusal_code(PUBLIC_COMMANDS[1], key) == KEY_MISMATCH


@pytest.mark.parametrize(
    "change",
    [
        {"command_id": ""},
        {"command_id": "c" * 161},
        {"command_id": "c/1"},
        {"command_id": "c 1"},
        {"timestamp_ms": -1},
        {"timestamp_ms": 2**53},
        {"destination_wallet_id": ""},
        {"destination_wallet_id": "w/2"},
        {"currency": "eur"},
        {"currency": "EURO"},
        {"currency": ""},
        {"reference": "r" * (TEXT_LENGTH_MAX + 1)},
    ],
    ids=lambda change: f"{next(iter(change))}={str(next(iter(change.values())))[:12]!r}",
)
def test_malformed_field_of_a_transfer_is_refused_as_invalid_field(change: dict[str, object]) -> None:
    transfer = c.Transfer(command_id="t-1", wallet_id=WALLET, timestamp_ms=NOW_MS, destination_wallet_id="w2",
                          amount_minor=100, currency="EUR")
    assert refusal_code(replace(transfer, **change)) == INVALID_FIELD


@pytest.mark.parametrize(
    "command",
    [
        c.PlaceHold(command_id="c1", wallet_id=WALLET, timestamp_ms=NOW_MS, hold_id="h/1", amount_minor=1,
                    currency="EUR", expires_at_ms=NOW_MS + 1),
        c.CaptureHold(command_id="c1", wallet_id=WALLET, timestamp_ms=NOW_MS, hold_id="h" * 65),
        c.ReleaseHold(command_id="c1", wallet_id=WALLET, timestamp_ms=NOW_MS, hold_id=""),
        c.TransferCredit(command_id="t:credit", wallet_id=WALLET, timestamp_ms=NOW_MS, transfer_id="t",
                         source_wallet_id="w 0", amount_minor=1, currency="EUR"),
        c.OpenWallet(command_id="c1", wallet_id=WALLET, timestamp_ms=NOW_MS, owner_id="o" * (TEXT_LENGTH_MAX + 1),
                     currency="EUR"),
        c.Freeze(command_id="c1", wallet_id=WALLET, timestamp_ms=NOW_MS, reason="x" * (TEXT_LENGTH_MAX + 1)),
    ],
    ids=["hold-id-slash", "hold-id-65", "hold-id-empty", "source-wallet-space", "owner-too-long", "reason-too-long"],
)
def test_malformed_identifier_or_text_of_other_kinds_is_refused_as_invalid_field(command: CommandBase) -> None:
    assert refusal_code(command, public=not isinstance(command, c.TransferCredit)) == INVALID_FIELD


def test_longest_well_formed_identifiers_and_texts_are_accepted() -> None:
    command = c.Deposit(command_id="c" * 128, wallet_id="w" * 64, timestamp_ms=2**53 - 1, amount_minor=1,
                        currency="EUR", reference="r" * TEXT_LENGTH_MAX, description="d" * TEXT_LENGTH_MAX)
    validate(command, command.wallet_id.encode(), public=True)


def _credit_leg(transfer: c.Transfer) -> CommandBase:
    return c.TransferCredit(command_id=identity.credit_command_id(WALLET, transfer.transfer_id, NOW_MS), wallet_id="w2",
                            timestamp_ms=NOW_MS, transfer_id=transfer.transfer_id, source_wallet_id=WALLET,
                            amount_minor=transfer.amount_minor, currency=transfer.currency)


def _refund_leg(transfer: c.Transfer) -> CommandBase:
    return c.TransferRefund(command_id=identity.refund_command_id(WALLET, transfer.transfer_id, NOW_MS),
                            wallet_id=WALLET, timestamp_ms=NOW_MS, transfer_id=transfer.transfer_id,
                            destination_wallet_id="w2", amount_minor=transfer.amount_minor, currency=transfer.currency,
                            reason_code="WALLET_CLOSED")


@pytest.mark.parametrize("leg_of", [_credit_leg, _refund_leg], ids=["credit", "refund"])
def test_transfer_legs_of_the_longest_accepted_transfer_id_are_accepted(
    leg_of: Callable[[c.Transfer], CommandBase],
) -> None:
    transfer = c.Transfer(command_id="t" * 128, wallet_id=WALLET, timestamp_ms=NOW_MS, destination_wallet_id="w2",
                          amount_minor=100, currency="EUR")
    validate(transfer, KEY, public=True)
    leg = leg_of(transfer)
    validate(leg, leg.wallet_id.encode(), public=False)



def _transfer_t1() -> c.Transfer:
    return c.Transfer(command_id="t-1", wallet_id=WALLET, timestamp_ms=NOW_MS, destination_wallet_id="w2",
                      amount_minor=100, currency="EUR")


@pytest.mark.parametrize("leg_of", [_credit_leg, _refund_leg], ids=["credit", "refund"])
def test_a_leg_whose_id_names_another_decision_time_is_refused_as_internal_id_mismatch(
    leg_of: Callable[[c.Transfer], CommandBase],
) -> None:
    """A leg's id names its transfer and the time of the event calling for it (its own timestamp_ms)."""
    leg = replace(leg_of(_transfer_t1()), timestamp_ms=NOW_MS + 1)
    assert refusal_code(leg, leg.wallet_id.encode(), public=False) == identity.INTERNAL_ID_MISMATCH


@pytest.mark.parametrize("leg_of", [_credit_leg, _refund_leg], ids=["credit", "refund"])
def test_a_leg_published_before_leg_ids_carried_a_time_is_still_accepted(
    leg_of: Callable[[c.Transfer], CommandBase],
) -> None:
    """`~credit/<source>/<transfer id>` legs may be on the legs topic when the processor is upgraded."""
    leg = leg_of(_transfer_t1())
    legacy = replace(leg, command_id=leg.command_id.rsplit(":", 1)[0])
    assert legacy.command_id in (f"~credit/{WALLET}/t-1", f"~refund/{WALLET}/t-1")
    validate(legacy, legacy.wallet_id.encode(), public=False)
    other_transfer = replace(leg, command_id=legacy.command_id.replace("t-1", "t-2"))
    assert refusal_code(other_transfer, leg.wallet_id.encode(), public=False) == identity.INTERNAL_ID_MISMATCH

# --- accept: decode, then validate ------------------------------------------------------------------------


@pytest.mark.parametrize("command", PUBLIC_COMMANDS, ids=kind_of)
def test_accept_of_a_well_formed_message_gives_the_command(codec: CommandCodec, command: CommandBase) -> None:
    assert accept(codec, KEY, codec.encode(command), public=True) == command


def test_accept_of_an_internal_kind_on_the_public_topic_is_refused(codec: CommandCodec) -> None:
    with pytest.raises(CodecError) as raised:
        accept(codec, KEY, codec.encode(INTERNAL_COMMANDS[0]), public=True)
    assert raised.value.code == INTERNAL_KIND_REFUSED
    assert accept(codec, KEY, codec.encode(INTERNAL_COMMANDS[0]), public=False) == INTERNAL_COMMANDS[0]


@pytest.mark.parametrize(("value", "code"), [(None, "TRUNCATED"), (b"\x01\x00\x00\x00\x00", "BAD_MAGIC_BYTE")])
def test_accept_of_an_undecodable_message_raises_the_codec_code(codec: CommandCodec, value: bytes | None,
                                                                code: str) -> None:
    with pytest.raises(CodecError) as raised:
        accept(codec, KEY, value, public=True)
    assert raised.value.code == code


def test_accept_checks_the_key_of_a_decoded_message(codec: CommandCodec) -> None:
    with pytest.raises(CodecError) as raised:
        accept(codec, b"w2", codec.encode(PUBLIC_COMMANDS[0]), public=True)
    assert raised.value.code == KEY_MISMATCH


# --- fingerprint ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", valid_command_of_each_kind(), ids=kind_of)
def test_fingerprint_ignores_the_timestamp(command: CommandBase) -> None:
    assert fingerprint(command) == fingerprint(replace(command, timestamp_ms=command.timestamp_ms + 86_400_000))


def test_fingerprint_is_a_short_hex_digest() -> None:
    digest = fingerprint(PUBLIC_COMMANDS[0])
    assert len(digest) == 16 and int(digest, 16) >= 0


@pytest.mark.parametrize(
    "change",
    [{"amount_minor": 101}, {"currency": "USD"}, {"reference": "other"}, {"description": "x"}, {"wallet_id": "w2"},
     {"command_id": "c-other"}],
    ids=lambda change: next(iter(change)),
)
def test_fingerprint_differs_when_the_body_differs(change: dict[str, object]) -> None:
    deposit = c.Deposit(command_id="c1", wallet_id=WALLET, timestamp_ms=NOW_MS, amount_minor=100, currency="EUR")
    assert fingerprint(deposit) != fingerprint(replace(deposit, **change))


def test_fingerprint_differs_between_kinds_with_the_same_fields() -> None:
    fields = {"command_id": "c1", "wallet_id": WALLET, "timestamp_ms": NOW_MS, "amount_minor": 100, "currency": "EUR"}
    assert fingerprint(c.Deposit(**fields)) != fingerprint(c.Withdraw(**fields))


def test_fingerprint_tells_a_full_capture_from_a_partial_one() -> None:
    full = c.CaptureHold(command_id="c1", wallet_id=WALLET, timestamp_ms=NOW_MS, hold_id="h1")
    assert fingerprint(full) != fingerprint(replace(full, amount_minor=100))


def test_fingerprint_does_not_confuse_text_moved_between_fields() -> None:
    deposit = c.Deposit(command_id="c1", wallet_id=WALLET, timestamp_ms=NOW_MS, amount_minor=1, currency="EUR",
                        reference="a\x1fb", description="")
    assert fingerprint(deposit) != fingerprint(replace(deposit, reference="a", description="b"))
