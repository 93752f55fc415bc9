"""The PostgreSQL implementation of the wallet's storage: several node processes, one ledger."""
