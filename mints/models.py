"""Wire data of the Cashu protocol as small typed values (amounts in the keyset's unit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Proof:
    """An unblinded signature on a secret: the bearer value itself."""

    amount: int
    keyset_id: str
    secret: str
    C: str

    def to_wire(self) -> dict[str, Any]:
        return {"amount": self.amount, "id": self.keyset_id, "secret": self.secret, "C": self.C}


@dataclass(frozen=True, slots=True)
class BlindedMessage:
    amount: int
    keyset_id: str
    B_: str

    def to_wire(self) -> dict[str, Any]:
        return {"amount": self.amount, "id": self.keyset_id, "B_": self.B_}


@dataclass(frozen=True, slots=True)
class BlindSignature:
    amount: int
    keyset_id: str
    C_: str
    dleq_e: str | None = None
    dleq_s: str | None = None

    @classmethod
    def from_wire(cls, data: Any) -> BlindSignature:
        from mints.errors import ProtocolError

        try:
            dleq = data.get("dleq") or {}
            return cls(
                amount=int(data["amount"]),
                keyset_id=str(data["id"]),
                C_=str(data["C_"]),
                dleq_e=dleq.get("e"),
                dleq_s=dleq.get("s"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(f"malformed blind signature from mint: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Keyset:
    """A mint keyset: its public keys by amount and the input fee it charges."""

    id: str
    unit: str
    active: bool
    input_fee_ppk: int
    keys: dict[int, str]


@dataclass(frozen=True, slots=True)
class MintQuote:
    quote: str
    request: str
    amount: int
    state: str  # UNPAID | PAID | ISSUED
    expiry: int | None


@dataclass(frozen=True, slots=True)
class MeltQuote:
    quote: str
    amount: int
    fee_reserve: int
    state: str  # UNPAID | PENDING | PAID
    expiry: int | None
    payment_preimage: str | None = None
    change: tuple[BlindSignature, ...] = ()


class ProofState:
    UNSPENT = "UNSPENT"
    PENDING = "PENDING"
    SPENT = "SPENT"
