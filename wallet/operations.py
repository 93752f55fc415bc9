"""What a custody operation is and how it can end: the names the write-ahead log uses.

Each kind of operation carries its own intent, a frozen dataclass: what the operation is
for (whose balance grows, which reservation pays, which invoice it mints). It is stored
as it is written down and read back into the same type, so recovery is a ``match`` on
the intent's type that mypy checks, never a dictionary read by key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, assert_never

from mints.errors import MintRefused
from mints.models import Proof
from mints.outputs import PreparedOutput


class OperationKind(StrEnum):
    """A write-ahead operation with a mint: each is recovered by a rule of its own."""

    RECEIVE = "receive"  # a client's token swapped for the node's proofs (NUT-03)
    SWAP = "swap"  # the node's proofs swapped for a token and change (NUT-03)
    MELT = "melt"  # the node's proofs pay an invoice (NUT-05)
    MINT = "mint"  # a paid quote minted into the node's proofs (NUT-04): Lightning in


class OperationState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class Outcome(StrEnum):
    """What resolving an operation found: it happened (and is stored now), it never will
    (and its holds are released), or the mint has not said yet."""

    DONE = "done"
    FAILED = "failed"
    PENDING = "pending"


class OutputRole(StrEnum):
    """What an operation's output becomes: kept in custody, sent in a token, or a melt's
    blank change output."""

    KEEP = "keep"
    SEND = "send"
    CHANGE = "change"


class AccountKind(StrEnum):
    KEY = "key"  # an sk- account (keys handed out once)
    TOKEN = "token"  # a token used as the API key
    XCASHU = "xcashu"  # a short-lived account paying one request, its rest the change


class InvoiceState(StrEnum):
    UNPAID = "unpaid"
    MINTING = "minting"
    PAID = "paid"
    EXPIRED = "expired"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Resolution:
    """An operation's outcome, with the mint's refusal when that is what ended it (the
    live request passes it on to its client)."""

    outcome: Outcome
    refusal: MintRefused | None = None


@dataclass(frozen=True, slots=True)
class NewAccount:
    """An account a receive or a mint opens once the money is in: its kind and the hashes
    of its keys (none: keys handed out later, or a token that is its own key)."""

    kind: AccountKind
    key_hash: str | None = None
    admin_key_hash: str | None = None
    token_is_key: bool = False  # the account is named by the redeemed token's id


@dataclass(frozen=True, slots=True)
class ReceiveIntent:
    """A client's token into custody: credited to ``account_id`` or to a new account."""

    account_id: int | None
    create: NewAccount | None
    fee_sat: int

    @property
    def kind(self) -> OperationKind:
        return OperationKind.RECEIVE


@dataclass(frozen=True, slots=True)
class SendIntent:
    """A token out of custody, paid by the account's reservation."""

    account_id: int
    purpose: str
    amount_sat: int
    fee_sat: int
    legacy: bool
    reservation_id: int = 0  # set in the transaction that writes the operation down

    @property
    def kind(self) -> OperationKind:
        return OperationKind.SWAP


@dataclass(frozen=True, slots=True)
class MeltIntent:
    """An invoice paid from custody, amount plus fee reserve held by the reservation."""

    account_id: int
    amount_sat: int
    reservation_id: int = 0  # set in the transaction that writes the operation down

    @property
    def kind(self) -> OperationKind:
        return OperationKind.MELT


@dataclass(frozen=True, slots=True)
class IssueIntent:
    """An invoice's paid quote minted: tops up ``account_id``, or opens a new account."""

    invoice_id: str
    amount_sat: int
    account_id: int | None

    @property
    def kind(self) -> OperationKind:
        return OperationKind.MINT


Intent = ReceiveIntent | SendIntent | MeltIntent | IssueIntent
SpendIntent = SendIntent | MeltIntent  # an operation paid by a reservation


@dataclass(frozen=True, slots=True)
class Operation:
    """A written-down operation as recovery reads it."""

    id: int
    mint_url: str
    state: OperationState
    intent: Intent
    token_id: str | None
    foreign_inputs: list[Proof]  # a receive's inputs: the client's proofs
    quote_id: str | None

    @property
    def kind(self) -> OperationKind:
        return self.intent.kind


@dataclass(frozen=True, slots=True)
class OutputRow:
    role: OutputRole
    output: PreparedOutput


# -- stored form: the same JSON the first schema wrote, read back into the types -----------


def encode_intent(intent: Intent) -> str:
    """The intent as stored (operations written before the types read back the same)."""
    match intent:
        case ReceiveIntent(account_id, create, fee_sat):
            if create is None:
                return json.dumps({"account_id": account_id, "fee_sat": fee_sat})
            spec: dict[str, Any] = {"kind": str(create.kind)}
            if create.key_hash is not None:
                spec["key_hash"] = create.key_hash
            if create.admin_key_hash is not None:
                spec["admin_key_hash"] = create.admin_key_hash
            if create.token_is_key:
                spec["token_id"] = "$token"
            return json.dumps({"create": spec, "fee_sat": fee_sat})
        case SendIntent() | MeltIntent():
            return json.dumps(asdict(intent))
        case IssueIntent(invoice_id, amount_sat, account_id):
            stored: dict[str, Any] = {"invoice_id": invoice_id, "amount_sat": amount_sat}
            if account_id is None:
                stored["create"] = {"kind": "key"}
            else:
                stored["account_id"] = account_id
            return json.dumps(stored)
        case _:
            assert_never(intent)


def decode_intent(kind: OperationKind, text: str) -> Intent:
    raw = json.loads(text)
    match kind:
        case OperationKind.RECEIVE:
            create = raw.get("create")
            return ReceiveIntent(
                _optional_int(raw.get("account_id")),
                None
                if create is None
                else NewAccount(
                    AccountKind(create["kind"]),
                    create.get("key_hash"),
                    create.get("admin_key_hash"),
                    create.get("token_id") == "$token",
                ),
                int(raw.get("fee_sat", 0)),
            )
        case OperationKind.SWAP:
            return SendIntent(
                int(raw["account_id"]),
                str(raw["purpose"]),
                int(raw["amount_sat"]),
                int(raw["fee_sat"]),
                bool(raw["legacy"]),
                int(raw["reservation_id"]),
            )
        case OperationKind.MELT:
            return MeltIntent(
                int(raw["account_id"]), int(raw["amount_sat"]), int(raw["reservation_id"])
            )
        case OperationKind.MINT:
            return IssueIntent(
                str(raw["invoice_id"]), int(raw["amount_sat"]), _optional_int(raw.get("account_id"))
            )
        case _:
            assert_never(kind)


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


@dataclass(frozen=True, slots=True)
class OperationResult:
    """What a finished operation recorded: the account it credited and how much, the
    outgoing token it made, what a melt cost."""

    account_id: int | None = None
    credited_msat: int | None = None
    outgoing_token_id: int | None = None
    cost_sat: int | None = None

    def encode(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def decode(cls, text: str | None) -> OperationResult:
        raw = json.loads(text or "{}")
        return cls(
            _optional_int(raw.get("account_id")),
            _optional_int(raw.get("credited_msat")),
            _optional_int(raw.get("outgoing_token_id")),
            _optional_int(raw.get("cost_sat")),
        )
