"""The node's own blind-signature arithmetic against nutshell's (an independent implementation).

mints.curve works on libsecp256k1 directly for speed; every result here is checked
against cashu.core.crypto (b_dhke) and the bip32 package nutshell derives NUT-13
secrets with, over random inputs.
"""

from __future__ import annotations

import pytest
from bip32 import BIP32
from cashu.core.crypto import b_dhke
from cashu.core.crypto.secp import PrivateKey, PublicKey
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mints import curve
from mints.errors import ProtocolError
from mints.models import BlindSignature, Keyset
from mints.outputs import derive_secret, prepare_outputs, proof_y, unblind, unblinding_term

scalars = st.integers(min_value=1, max_value=curve.ORDER - 1).map(lambda k: k.to_bytes(32, "big"))
seeds = st.binary(min_size=16, max_size=64)
keyset_ids = st.binary(min_size=7, max_size=7).map(lambda b: "00" + b.hex())


def test_hash_to_curve_matches_the_nut00_vector() -> None:
    point = curve.hash_to_curve(bytes(32))
    assert curve.serialize(point).hex() == (
        "024cce997d3b518f739663b757deaec95bcd9473c30a14ac2fd04023a739d1a725"
    )


@given(st.binary(max_size=80))
def test_hash_to_curve_matches_nutshell(message: bytes) -> None:
    theirs = b_dhke.hash_to_curve(message).format().hex()
    assert curve.serialize(curve.hash_to_curve(message)).hex() == theirs


@settings(max_examples=40)
@given(seeds, keyset_ids, st.integers(min_value=0, max_value=2**31 - 2))
def test_bip32_secrets_match_the_bip32_package(seed: bytes, keyset_id: str, counter: int) -> None:
    index = int(keyset_id, 16) % (2**31 - 1)
    path = f"m/129372'/0'/{index}'/{counter}'"
    bip = BIP32.from_seed(seed)
    secret, r = derive_secret(seed, keyset_id, counter)
    assert secret == bip.get_privkey_from_path(f"{path}/0").hex()
    assert r == bip.get_privkey_from_path(f"{path}/1")


@settings(max_examples=40)
@given(seeds, keyset_ids, scalars, st.integers(min_value=0, max_value=10**6))
def test_blind_sign_unblind_round_trip_matches_nutshell(
    seed: bytes, keyset_id: str, mint_key: bytes, counter: int
) -> None:
    """What a mint signs, unblinded by the node, is nutshell's C = a·Y with a valid DLEQ."""
    a = PrivateKey(mint_key)
    public = a.public_key.format().hex()
    keyset = Keyset(id=keyset_id, unit="sat", active=True, input_fee_ppk=0, keys={8: public})
    (output,) = prepare_outputs(seed, keyset_id, counter, [8])
    their_b_, _ = b_dhke.step1_alice(output.secret, PrivateKey(bytes.fromhex(output.r)))
    assert their_b_.format().hex() == output.B_
    assert output.y == proof_y(output.secret)

    c_, e, s = b_dhke.step2_bob(PublicKey(bytes.fromhex(output.B_)), a)
    signature = BlindSignature(
        amount=8, keyset_id=keyset_id, C_=c_.format().hex(), dleq_e=e.to_hex(), dleq_s=s.to_hex()
    )
    proof = unblind(output, signature, keyset)
    assert b_dhke.verify(a, PublicKey(bytes.fromhex(proof.C)), proof.secret)
    # −r·A computed while the mint is asked gives the same proof
    assert unblind(output, signature, keyset, term=unblinding_term(output, keyset)) == proof

    forged = BlindSignature(
        amount=8, keyset_id=keyset_id, C_=c_.format().hex(), dleq_e=s.to_hex(), dleq_s=e.to_hex()
    )
    with pytest.raises(ProtocolError, match="DLEQ"):
        unblind(output, forged, keyset)


@given(scalars, scalars, scalars)
@example((1).to_bytes(32, "big"), (1).to_bytes(32, "big"), (1).to_bytes(32, "big"))
def test_base_mul_sub_is_two_multiplications_in_one(s: bytes, e: bytes, a: bytes) -> None:
    """s·G − e·A by ECDSA recovery equals the same by separate multiplications."""
    point = curve.base_mul(a)
    if (
        int.from_bytes(s, "big")
        == int.from_bytes(e, "big") * int.from_bytes(a, "big") % curve.ORDER
    ):
        with pytest.raises(curve.CurveError):  # the point at infinity
            curve.base_mul_sub(s, e, point)
        return
    separate = curve.add_base_mul(curve.mul(point, curve.negated(e)), s)
    assert curve.serialize(curve.base_mul_sub(s, e, point)) == curve.serialize(separate)
    theirs = PrivateKey(s).public_key + PrivateKey(a).public_key.multiply(
        curve.negated(e)
    )  # nutshell's own point arithmetic
    assert curve.serialize(curve.base_mul_sub(s, e, point)) == theirs.format()


@pytest.mark.parametrize(
    ("c_", "e"),
    [
        ("02" + "00" * 32, "11" * 32),  # not a point
        ("zz", "11" * 32),  # not hex
        (None, "ff" * 32),  # scalar ≥ n
        (None, "00" * 32),  # zero scalar
    ],
)
def test_malformed_signatures_are_protocol_errors(c_: str | None, e: str) -> None:
    a = PrivateKey(b"\x07" * 32)
    keyset = Keyset(
        id="00aabbccddeeff00",
        unit="sat",
        active=True,
        input_fee_ppk=0,
        keys={1: a.public_key.format().hex()},
    )
    (output,) = prepare_outputs(b"\x01" * 32, keyset.id, 0, [1])
    real_c_ = b_dhke.step2_bob(PublicKey(bytes.fromhex(output.B_)), a)[0].format().hex()
    signature = BlindSignature(
        amount=1, keyset_id=keyset.id, C_=c_ or real_c_, dleq_e=e, dleq_s="22" * 32
    )
    with pytest.raises(ProtocolError):
        unblind(output, signature, keyset)
