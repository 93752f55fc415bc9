"""Talking to Cashu mints: tokens, keysets, swap, state, quotes and restore.

This layer knows nothing of accounts or HTTP requests to the node; it turns every
mint failure into one of the typed errors in :mod:`mints.errors`.
"""
