"""Token parsing, encoding and the local checks a token passes before any swap.

Tokens are minted by nutshell's own wallet (an independent implementation) and checked
against the real local mints; nutshell also judges whether a refused token is untouched.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import cbor2
import pytest
from cashu.wallet.helpers import deserialize_token_from_string
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.ecash import EcashFactory

from mints.directory import MintDirectory
from mints.errors import (
    AmountTooSmall,
    MintUntrusted,
    TokenInvalid,
    UnitUnsupported,
)
from mints.models import Proof
from mints.token import Token, encode_token, parse_token
from routstr_node.demo.mint import LocalMint


@pytest.fixture
async def directory(mint: LocalMint) -> AsyncIterator[MintDirectory]:
    """A node's view of the mints: only the fee-less mint is trusted."""
    mints = MintDirectory([mint.url])
    yield mints
    await mints.close()


@pytest.fixture
async def fee_directory(fee_mint: LocalMint) -> AsyncIterator[MintDirectory]:
    mints = MintDirectory([fee_mint.url])
    yield mints
    await mints.close()


def _nutshell_proofs(token: str) -> set[tuple[int, str, str]]:
    decoded = deserialize_token_from_string(token)
    return {(int(p.amount), str(p.secret), str(p.C)) for p in decoded.proofs}


def _proof_set(token: Token) -> set[tuple[int, str, str]]:
    return {(p.amount, p.secret, p.C) for p in token.proofs}


async def _active_keyset_id(directory: MintDirectory) -> str:
    return (await directory.primary.active_keyset()).id


# -- parsing nutshell's tokens ---------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["cashuB", "cashuA"])
async def test_parses_a_nutshell_token(
    ecash: EcashFactory, mint: LocalMint, directory: MintDirectory, legacy: bool
) -> None:
    text = await ecash.token(1000, mint_url=mint.url, legacy=legacy)

    token = parse_token(text)

    assert token.amount == 1000
    assert token.mint == mint.url
    assert token.unit == "sat"
    assert sorted(p.amount for p in token.proofs) == [8, 32, 64, 128, 256, 512]
    assert _proof_set(token) == _nutshell_proofs(text)
    full_id = await _active_keyset_id(directory)
    if legacy:  # V3 carries the full keyset id
        assert {p.keyset_id for p in token.proofs} == {full_id}
    else:  # V4 carries the short id, a prefix of the full one
        (short_id,) = {p.keyset_id for p in token.proofs}
        assert len(short_id) == 16 and full_id.startswith(short_id)


async def test_a_and_b_encodings_of_the_same_proofs_are_one_token(
    ecash: EcashFactory, mint: LocalMint, directory: MintDirectory
) -> None:
    text_a = await ecash.token(21, mint_url=mint.url, legacy=True)
    token_a = parse_token(text_a)
    text_b = encode_token(token_a.mint, token_a.proofs)
    assert text_b.startswith("cashuB")

    token_b = parse_token(text_b)

    assert token_b.token_id == token_a.token_id
    assert token_b.signed_id == token_a.signed_id
    assert token_b.signatures == token_a.signatures
    assert parse_token(encode_token(token_b.mint, token_b.proofs, legacy=True)).token_id == (
        token_a.token_id
    )
    # the same secrets with another signature: the same payment, not the same token
    first, *rest = token_a.proofs
    resigned = parse_token(encode_token(token_a.mint, [replace(first, C="02" + "11" * 32), *rest]))
    assert resigned.token_id == token_a.token_id
    assert resigned.signed_id != token_a.signed_id
    assert parse_token("cashu:" + text_b).token_id == token_a.token_id
    checked_a = await directory.check_token(text_a)
    checked_b = await directory.check_token(text_b)
    assert checked_a.token.proofs == checked_b.token.proofs  # short ids expanded
    other = parse_token(await ecash.token(21, mint_url=mint.url, legacy=True))
    assert other.token_id != token_a.token_id


@pytest.mark.parametrize("legacy", [False, True], ids=["cashuB", "cashuA"])
async def test_encode_then_parse_round_trips(
    ecash: EcashFactory, mint: LocalMint, directory: MintDirectory, legacy: bool
) -> None:
    checked = await directory.check_token(await ecash.token(77, mint_url=mint.url))
    proofs = checked.token.proofs  # full keyset ids

    text = encode_token(mint.url, proofs, legacy=legacy, memo="thanks")
    again = parse_token(text)

    assert text.startswith("cashuA" if legacy else "cashuB")
    assert (again.mint, again.unit, again.memo, again.amount) == (mint.url, "sat", "thanks", 77)
    assert _proof_set(again) == _proof_set(checked.token)
    assert _nutshell_proofs(text) == _proof_set(checked.token)
    assert (await directory.check_token(text)).token.proofs == proofs


async def test_check_token_normalizes_the_mint_url(
    ecash: EcashFactory, mint: LocalMint, directory: MintDirectory
) -> None:
    token = parse_token(await ecash.token(5, mint_url=mint.url))
    for variant in (mint.url + "/", " " + mint.url + "/ "):
        text = "cashu:" + encode_token(variant, token.proofs)
        checked = await directory.check_token(text)
        assert checked.token.mint == mint.url
        assert checked.token.token_id == token.token_id
        assert (checked.fee, checked.value_after_fee) == (0, 5)


# -- everything check_token refuses ------------------------------------------------------


async def test_check_token_refuses_garbage(
    ecash: EcashFactory, mint: LocalMint, directory: MintDirectory
) -> None:
    real = await ecash.token(10, mint_url=mint.url)
    refused = [
        "",
        "hello",
        "cashu",
        "cashuB",
        "cashuA",
        "cashuC" + real[len("cashuB") :],  # unknown prefix, valid payload
        "casha" + real,
        real[: len(real) // 2],  # truncated
        real[:-8],
        "cashuA" + base64.urlsafe_b64encode(b'{"token": []}').decode(),
        "cashuA" + base64.urlsafe_b64encode(b"[]").decode(),
    ]
    for text in refused:
        with pytest.raises(TokenInvalid):
            await directory.check_token(text)


async def test_check_token_refuses_duplicated_proofs(
    ecash: EcashFactory, mint: LocalMint, directory: MintDirectory
) -> None:
    token = parse_token(await ecash.token(10, mint_url=mint.url))
    for legacy in (False, True):
        doubled = encode_token(mint.url, [*token.proofs, token.proofs[0]], legacy=legacy)
        with pytest.raises(TokenInvalid, match="same proof twice"):
            await directory.check_token(doubled)


@pytest.mark.parametrize("legacy", [False, True], ids=["cashuB", "cashuA"])
async def test_check_token_refuses_other_units(
    ecash: EcashFactory, mint: LocalMint, directory: MintDirectory, legacy: bool
) -> None:
    token = parse_token(await ecash.token(10, mint_url=mint.url))
    in_usd = encode_token(mint.url, token.proofs, unit="usd", legacy=legacy)

    assert parse_token(in_usd).unit == "usd"
    with pytest.raises(UnitUnsupported):
        await directory.check_token(in_usd)


async def test_check_token_refuses_an_untrusted_mint(
    ecash: EcashFactory, fee_mint: LocalMint, directory: MintDirectory
) -> None:
    text = await ecash.token(10, mint_url=fee_mint.url)
    with pytest.raises(MintUntrusted):
        await directory.check_token(text)


async def test_check_token_refuses_a_token_worth_no_more_than_its_fee(
    ecash: EcashFactory, fee_mint: LocalMint, fee_directory: MintDirectory
) -> None:
    with pytest.raises(AmountTooSmall):
        await fee_directory.check_token(await ecash.token(1, mint_url=fee_mint.url))
    three_ones = parse_token(await ecash.token(3, mint_url=fee_mint.url))  # 1 + 2: fee 1
    checked = await fee_directory.check_token(encode_token(fee_mint.url, three_ones.proofs))
    assert (checked.fee, checked.value_after_fee) == (1, 2)
    two = await fee_directory.check_token(await ecash.token(2, mint_url=fee_mint.url))
    assert (two.fee, two.value_after_fee) == (1, 1)


async def test_check_token_refuses_proofs_of_a_keyset_the_mint_does_not_have(
    ecash: EcashFactory, mint: LocalMint, fee_mint: LocalMint, directory: MintDirectory
) -> None:
    foreign = parse_token(await ecash.token(10, mint_url=fee_mint.url))
    relabelled = encode_token(mint.url, foreign.proofs)  # claims the trusted mint

    with pytest.raises(TokenInvalid):
        await directory.check_token(relabelled)


async def test_a_refused_token_stays_unspent_and_redeemable(
    ecash: EcashFactory,
    mint: LocalMint,
    fee_mint: LocalMint,
    directory: MintDirectory,
    fee_directory: MintDirectory,
) -> None:
    text = await ecash.token(64 + 32 + 4, mint_url=mint.url)
    token = parse_token(text)
    refusals: list[tuple[MintDirectory, str, type[Exception]]] = [
        (directory, text[:-3], TokenInvalid),
        (directory, encode_token(mint.url, [*token.proofs, token.proofs[-1]]), TokenInvalid),
        (directory, encode_token(mint.url, token.proofs, unit="usd"), UnitUnsupported),
        (fee_directory, text, MintUntrusted),
    ]
    for checker, variant, error in refusals:
        with pytest.raises(error):
            await checker.check_token(variant)

    assert await ecash.proof_states(text) == ["UNSPENT"] * 3
    assert await ecash.redeem(text) == 100

    small = await ecash.token(1, mint_url=fee_mint.url)
    with pytest.raises(AmountTooSmall):
        await fee_directory.check_token(small)
    assert await ecash.proof_states(small) == ["UNSPENT"]


# -- nothing but TokenInvalid escapes parse_token -----------------------------------------


@pytest.fixture(scope="module")
async def real_tokens(ecash: EcashFactory, mint: LocalMint) -> tuple[str, str]:
    """A cashuA and a cashuB token as nutshell makes them (never spent)."""
    return (
        await ecash.token(1000, mint_url=mint.url, legacy=True),
        await ecash.token(1000, mint_url=mint.url),
    )


def _parse_or_refuse(text: str) -> None:
    """parse_token either refuses with TokenInvalid or returns a token that holds together."""
    try:
        token = parse_token(text)
    except TokenInvalid:
        return
    assert token.mint and token.proofs
    assert all(p.amount > 0 and p.amount & (p.amount - 1) == 0 for p in token.proofs)
    assert len({p.secret for p in token.proofs}) == len(token.proofs)
    assert token.amount == sum(p.amount for p in token.proofs)
    assert len(token.token_id) == 64


_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_PREFIXES = st.sampled_from(["cashuA", "cashuB", "cashu:cashuA", "cashu:cashuB", " cashuB"])
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.sampled_from(["sat", "usd", "", "00", "0" * 66, "ff" * 33, "http://m"])
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
_CBOR = st.recursive(
    _SCALARS | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["m", "u", "d", "t", "i", "p", "a", "s", "c"]), inner)
    ),
    max_leaves=12,
)


def _b64(data: bytes, urlsafe: bool, strip: bool) -> str:
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()
    return text.rstrip("=") if strip else text


_VALID_C = st.binary(min_size=32, max_size=32).map(lambda b: "02" + b.hex())


def _maybe(draw: st.DrawFn, corrupt: set[str], field: str, valid: st.SearchStrategy[Any]) -> Any:
    """A valid value for ``field`` unless the example chose to corrupt it."""
    return draw(_SCALARS if field in corrupt else valid)


_V3_FIELDS = ["token", "mint", "proofs", "amount", "id", "secret", "C", "unit"]
_V4_FIELDS = ["m", "u", "t", "i", "p", "a", "s", "c"]


@st.composite
def _v3_like(draw: st.DrawFn) -> dict[str, Any]:
    """A V3 token that is valid except for up to two fields of a wrong type or value."""
    corrupt = set(draw(st.lists(st.sampled_from(_V3_FIELDS), max_size=2)))
    amount = st.sampled_from([1, 2, 4, 3, 0, -4, 2**64])
    proofs = [
        {
            "amount": _maybe(draw, corrupt, "amount", amount),
            "id": _maybe(draw, corrupt, "id", st.sampled_from(["009a1f293253e41e", "zz", "01"])),
            "secret": _maybe(draw, corrupt, "secret", st.text(min_size=1, max_size=20)),
            "C": _maybe(draw, corrupt, "C", st.one_of(_VALID_C, st.just("xyz"))),
        }
        for _ in range(draw(st.integers(min_value=0, max_value=3)))
    ]
    entry = {
        "mint": _maybe(draw, corrupt, "mint", st.sampled_from(["http://m", "http://m/", ""])),
        "proofs": draw(_SCALARS) if "proofs" in corrupt else proofs,
    }
    token = draw(_JSON) if "token" in corrupt else [entry] * draw(st.integers(0, 2))
    return {"token": token, "unit": _maybe(draw, corrupt, "unit", st.just("sat"))}


@st.composite
def _v4_like(draw: st.DrawFn) -> dict[str, Any]:
    """A V4 token (CBOR) valid except for up to two fields of a wrong type or value."""
    corrupt = set(draw(st.lists(st.sampled_from(_V4_FIELDS), max_size=2)))
    amount = st.sampled_from([1, 2, 4, 3, 0, -4, 2**64])
    groups = []
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        proofs = [
            {
                "a": _maybe(draw, corrupt, "a", amount),
                "s": _maybe(draw, corrupt, "s", st.text(min_size=1, max_size=20)),
                "c": _maybe(draw, corrupt, "c", st.binary(min_size=33, max_size=33)),
            }
            for _ in range(draw(st.integers(min_value=0, max_value=3)))
        ]
        groups.append(
            {
                "i": _maybe(draw, corrupt, "i", st.binary(min_size=8, max_size=8)),
                "p": draw(_CBOR) if "p" in corrupt else proofs,
            }
        )
    return {
        "m": _maybe(draw, corrupt, "m", st.sampled_from(["http://m", "http://m/", ""])),
        "u": _maybe(draw, corrupt, "u", st.just("sat")),
        "t": draw(_CBOR) if "t" in corrupt else groups,
    }


@_FUZZ
@given(st.text())
def test_parse_token_refuses_any_text(text: str) -> None:
    _parse_or_refuse(text)


@_FUZZ
@given(_PREFIXES, st.binary(max_size=300), st.booleans(), st.booleans())
def test_parse_token_refuses_random_base64(
    prefix: str, data: bytes, urlsafe: bool, strip: bool
) -> None:
    _parse_or_refuse(prefix + _b64(data, urlsafe, strip))


@_FUZZ
@given(st.one_of(_JSON, _v3_like()), st.booleans())
def test_parse_token_refuses_malformed_json_tokens(value: Any, strip: bool) -> None:
    _parse_or_refuse("cashuA" + _b64(json.dumps(value).encode(), True, strip))


@_FUZZ
@given(st.one_of(_CBOR, _v4_like()), st.booleans())
def test_parse_token_refuses_malformed_cbor_tokens(value: Any, strip: bool) -> None:
    _parse_or_refuse("cashuB" + _b64(cbor2.dumps(value), True, strip))


@_FUZZ
@given(st.booleans(), st.data())
def test_parse_token_refuses_mutated_real_tokens(
    real_tokens: tuple[str, str], legacy: bool, data: st.DataObject
) -> None:
    text = real_tokens[0] if legacy else real_tokens[1]
    mutation = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete", "swap_prefix"]))
    i = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    char = data.draw(st.characters())
    if mutation == "truncate":
        mutated = text[:i]
    elif mutation == "flip":
        mutated = text[:i] + char + text[i + 1 :]
    elif mutation == "insert":
        mutated = text[:i] + char + text[i:]
    elif mutation == "delete":
        mutated = text[:i] + text[i + 1 :]
    else:
        mutated = ("cashuB" if legacy else "cashuA") + text[6:]
    _parse_or_refuse(mutated)


def test_the_real_tokens_parse(real_tokens: tuple[str, str]) -> None:
    """The mutation test's seeds are valid, so its refusals come from the mutations."""
    token_a, token_b = (parse_token(t) for t in real_tokens)
    assert token_a.amount == token_b.amount == 1000


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("cashuA", "empty"),
        ("cashuA" + base64.urlsafe_b64encode(b"\xff\xfe not json").decode(), "valid JSON"),
        ("cashuA" + base64.urlsafe_b64encode(b"[1, 2]").decode(), "not an object"),
        ("cashuA" + base64.urlsafe_b64encode(b'{"token": []}').decode(), "proofs"),
        (
            "cashuA"
            + base64.urlsafe_b64encode(
                b'{"token": [{"mint": "http://m", "proofs": [{"id": "00", "amount": "x",'
                b' "secret": "s", "C": "02"}]}]}'
            ).decode(),
            "'amount'",
        ),
        ("cashuB" + base64.urlsafe_b64encode(b"\x1c").decode(), "valid CBOR"),
        ("cashuB" + base64.urlsafe_b64encode(cbor2.dumps([1])).decode(), "not an object"),
    ],
)
def test_a_malformed_token_is_told_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(TokenInvalid) as refused:
        parse_token(text)
    assert says in refused.value.message
    assert "Exception" not in refused.value.message


@pytest.mark.parametrize("legacy", [False, True])
def test_amounts_past_what_any_mint_issues_are_refused(legacy: bool) -> None:
    """2^63 once reached SQLite and answered 500 (OverflowError)."""
    secret = "a" * 64
    c = "02" + "11" * 32
    for proofs in (
        [Proof(2**63, "00ad268c4d1f5826", secret, c)],
        [Proof(2**50, "00ad268c4d1f5826", f"{secret}{i}", c) for i in range(3)],
    ):
        with pytest.raises(TokenInvalid, match="more than any mint issues"):
            parse_token(encode_token("http://mint.example", proofs, legacy=legacy))
