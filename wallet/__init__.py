"""Custody and ledger: the node's ecash, accounts, reservations, change and withdrawals.

One database holds proofs and balances together, so every movement of money and its
journal entry commit in one transaction: a SQLite file in data_dir, or PostgreSQL for
several node processes (:mod:`wallet.store` is the interface both implement). This
layer knows nothing of HTTP or models. The node imports only the names below.
"""

from wallet import errors
from wallet.audit import AuditReport
from wallet.errors import (
    AdminKeyTaken,
    InsufficientBalance,
    InsufficientCustody,
    InsufficientEarnings,
    InvoiceAmountMismatch,
    InvoiceNotFound,
    InvoiceRejected,
    InvoiceSecretInvalid,
    KeysAlreadyDelivered,
    PaymentFailed,
    TokenAlreadyRedeemed,
    WalletError,
)
from wallet.keys import API_KEY_PREFIX, key_hash, new_api_key
from wallet.ledger import Ledger
from wallet.lightning_in import MAX_INVOICE_SAT, IssuedKeys, NewInvoice
from wallet.migrate import CannotMigrate, migrate_to_postgres
from wallet.payout_records import Books, PayoutKind, PayoutRow
from wallet.records import (
    AccountRow,
    ChargedRequest,
    InvoiceRecord,
    RequestTag,
    Settlement,
    StoredSettings,
    Withdrawal,
)
from wallet.request_counts import RequestCounts
from wallet.service import DB_FILE, NewAccount, WalletService
from wallet.settings_store import PasswordOrigin, SettingsStore
from wallet.store_errors import StoreUnavailable

__all__ = [
    "API_KEY_PREFIX",
    "DB_FILE",
    "MAX_INVOICE_SAT",
    "AccountRow",
    "AdminKeyTaken",
    "AuditReport",
    "Books",
    "CannotMigrate",
    "ChargedRequest",
    "InsufficientBalance",
    "InsufficientCustody",
    "InsufficientEarnings",
    "InvoiceAmountMismatch",
    "InvoiceNotFound",
    "InvoiceRecord",
    "InvoiceRejected",
    "InvoiceSecretInvalid",
    "IssuedKeys",
    "KeysAlreadyDelivered",
    "Ledger",
    "NewAccount",
    "NewInvoice",
    "PasswordOrigin",
    "PaymentFailed",
    "PayoutKind",
    "PayoutRow",
    "RequestCounts",
    "RequestTag",
    "SettingsStore",
    "Settlement",
    "StoreUnavailable",
    "StoredSettings",
    "TokenAlreadyRedeemed",
    "WalletError",
    "WalletService",
    "Withdrawal",
    "errors",
    "key_hash",
    "migrate_to_postgres",
    "new_api_key",
]
