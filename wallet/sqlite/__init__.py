"""The SQLite implementation of the wallet's storage."""
