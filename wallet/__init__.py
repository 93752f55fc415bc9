"""Custody and ledger: the node's ecash, accounts, reservations, change and withdrawals.

One SQLite database holds proofs and balances together, so every movement of money and
its journal entry commit in one transaction. This layer knows nothing of HTTP or models.
"""
