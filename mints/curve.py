"""The secp256k1 arithmetic of blind signatures, straight on libsecp256k1.

Points stay in libsecp256k1's parsed form between operations and scalars are plain
bytes, so an unblind with its DLEQ check costs four multiplications and nothing else:
key objects that compute a public key for every scalar (what cashu's helpers build)
cost more than the multiplications themselves.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import secp256k1

_lib: Any = secp256k1.lib
_ffi: Any = secp256k1.ffi
_ctx: Any = secp256k1.secp256k1_ctx

ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
DOMAIN_SEPARATOR = b"Secp256k1_HashToCurve_Cashu_"

Point = Any  # a 'secp256k1_pubkey *' owned by cffi


class CurveError(ValueError):
    """Bytes that are not a point, or a scalar outside 1..n-1."""


def parse(data: bytes) -> Point:
    point = _ffi.new("secp256k1_pubkey *")
    if not _lib.secp256k1_ec_pubkey_parse(_ctx, point, data, len(data)):
        raise CurveError("not a point on secp256k1")
    return point


def parse_hex(data: str) -> Point:
    try:
        raw = bytes.fromhex(data)
    except ValueError as exc:
        raise CurveError("point is not hex") from exc
    return parse(raw)


def serialize(point: Point, *, compressed: bool = True) -> bytes:
    size = 33 if compressed else 65
    out = _ffi.new("unsigned char[]", size)
    length = _ffi.new("size_t *", size)
    flag = _lib.SECP256K1_EC_COMPRESSED if compressed else _lib.SECP256K1_EC_UNCOMPRESSED
    _lib.secp256k1_ec_pubkey_serialize(_ctx, out, length, point, flag)
    return bytes(_ffi.buffer(out, length[0]))


def scalar(value: int) -> bytes:
    """A scalar's 32 bytes, refusing 0 and values ≥ n as libsecp256k1 would."""
    if not 0 < value < ORDER:
        raise CurveError("scalar out of range")
    return value.to_bytes(32, "big")


def negated(scalar_bytes: bytes) -> bytes:
    return scalar((ORDER - int.from_bytes(scalar_bytes, "big")) % ORDER)


def base_mul(k: bytes) -> Point:
    """k·G."""
    point = _ffi.new("secp256k1_pubkey *")
    if not _lib.secp256k1_ec_pubkey_create(_ctx, point, k):
        raise CurveError("scalar out of range")
    return point


def _tweaked(point: Point, k: bytes, tweak: Any, error: str) -> Point:
    """A copy of P with one of libsecp256k1's in-place tweaks applied."""
    result = _ffi.new("secp256k1_pubkey *")
    _ffi.memmove(result, point, 64)
    if not tweak(_ctx, result, k):
        raise CurveError(error)
    return result


def mul(point: Point, k: bytes) -> Point:
    """k·P, leaving P as it was."""
    return _tweaked(point, k, _lib.secp256k1_ec_pubkey_tweak_mul, "scalar out of range")


def add_base_mul(point: Point, k: bytes) -> Point:
    """P + k·G in one step."""
    return _tweaked(point, k, _lib.secp256k1_ec_pubkey_tweak_add, "sum is the point at infinity")


def base_mul_sub(s: bytes, e: bytes, a: Point) -> Point:
    """s·G − e·A as one double multiplication instead of two single ones.

    libsecp256k1 exposes its double multiplication (u1·G + u2·R, the cost of about one
    single one) only as ECDSA public-key recovery, Q = x⁻¹·(sig_s·R − z·G) for the point
    R with x-coordinate x: with R = A, sig_s = −e·x and z = −s·x that is s·G − e·A.
    """
    encoded = serialize(a)
    x = int.from_bytes(encoded[1:], "big")
    sig_s = (-int.from_bytes(e, "big") * x) % ORDER
    z = (-int.from_bytes(s, "big") * x) % ORDER
    signature = _ffi.new("secp256k1_ecdsa_recoverable_signature *")
    result = _ffi.new("secp256k1_pubkey *")
    if (
        x < ORDER  # else x mod n is not A's x (probability ~2^-128)
        and sig_s
        and _lib.secp256k1_ecdsa_recoverable_signature_parse_compact(
            _ctx, signature, x.to_bytes(32, "big") + sig_s.to_bytes(32, "big"), encoded[0] - 2
        )
        and _lib.secp256k1_ecdsa_recover(_ctx, result, signature, z.to_bytes(32, "big"))
    ):
        return result
    return add_base_mul(mul(a, negated(e)), s)


def add(a: Point, b: Point) -> Point:
    total = _ffi.new("secp256k1_pubkey *")
    if not _lib.secp256k1_ec_pubkey_combine(_ctx, total, [a, b], 2):
        raise CurveError("sum is the point at infinity")
    return total


def hash_to_curve(message: bytes) -> Point:
    """NUT-00 hash_to_curve: the first x = SHA256(SHA256(sep‖msg)‖counter) on the curve."""
    digest = hashlib.sha256(DOMAIN_SEPARATOR + message).digest()
    point = _ffi.new("secp256k1_pubkey *")
    for counter in range(2**16):
        candidate = b"\x02" + hashlib.sha256(digest + counter.to_bytes(4, "little")).digest()
        if _lib.secp256k1_ec_pubkey_parse(_ctx, point, candidate, 33):
            return point
    raise CurveError("no point found")  # pragma: no cover - probability 2^-65536


def blind(secret: bytes, r: bytes) -> tuple[Point, Point]:
    """(Y, B_ = Y + r·G) for a secret and blinding factor."""
    y = hash_to_curve(secret)
    return y, add_base_mul(y, r)


def unblinding_term(r: bytes, a: Point) -> Point:
    """−r·A: known before the mint answers, so it can be computed while it is asked."""
    return mul(a, negated(r))


def unblind(c_: Point, term: Point) -> Point:
    """C = C_ − r·A, given the term −r·A."""
    return add(c_, term)


def _hash_e(*points: Point) -> bytes:
    joined = "".join(serialize(p, compressed=False).hex() for p in points)
    return hashlib.sha256(joined.encode()).digest()


def dleq_holds(b_: Point, c_: Point, e: bytes, s: bytes, a: Point) -> bool:
    """NUT-12: e == hash(s·G − e·A, s·B_ − e·C_, A, C_)."""
    r1 = base_mul_sub(s, e, a)
    r2 = add(mul(b_, s), mul(c_, negated(e)))
    return hmac.compare_digest(e, _hash_e(r1, r2, a, c_))
