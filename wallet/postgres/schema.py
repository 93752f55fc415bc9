"""Schema migrations for PostgreSQL, numbered from the first version on.

The same tables and rules as the SQLite schema at its newest version (see
:mod:`wallet.sqlite.schema` for why each is so): every journal row balances, the journal
is append-only, balances never go negative, a token has one live operation. Beside
them, what several processes must share: the wallet's seed, and the leases by which
one process at a time holds a pending operation or a role (announcing on Nostr).
"""

from __future__ import annotations

from typing import Any

MIGRATIONS: list[str] = [
    # 1: the ledger, custody and invoices as the SQLite schema has them at version 7
    """
    CREATE TABLE accounts (
        id BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('key', 'token', 'xcashu')),
        key_hash TEXT UNIQUE,
        admin_key_hash TEXT UNIQUE,
        token_id TEXT UNIQUE,
        mint_url TEXT,
        balance_msat BIGINT NOT NULL DEFAULT 0 CHECK (balance_msat >= 0),
        reserved_msat BIGINT NOT NULL DEFAULT 0 CHECK (reserved_msat >= 0),
        created_at BIGINT NOT NULL,
        last_journal_id BIGINT,
        keys_used_at BIGINT
    );
    CREATE TABLE reservations (
        id BIGSERIAL PRIMARY KEY,
        account_id BIGINT NOT NULL REFERENCES accounts (id),
        amount_msat BIGINT NOT NULL CHECK (amount_msat >= 0),
        state TEXT NOT NULL CHECK (state IN ('open', 'charged', 'released')),
        charged_msat BIGINT,
        purpose TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        settled_at BIGINT,
        delivered_msat BIGINT NOT NULL DEFAULT 0 CHECK (delivered_msat >= 0),
        request_id TEXT,
        request_route TEXT,
        request_model TEXT,
        request_provider TEXT
    );
    CREATE INDEX reservations_open ON reservations (state) WHERE state = 'open';
    CREATE TABLE earnings (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        amount_msat BIGINT NOT NULL CHECK (amount_msat >= 0)
    );
    INSERT INTO earnings (id, amount_msat) VALUES (1, 0);
    CREATE TABLE journal (
        id BIGSERIAL PRIMARY KEY,
        at BIGINT NOT NULL,
        kind TEXT NOT NULL,
        account_id BIGINT,
        reservation_id BIGINT,
        operation_id BIGINT,
        custody_delta_msat BIGINT NOT NULL DEFAULT 0,
        balance_delta_msat BIGINT NOT NULL DEFAULT 0,
        reserved_delta_msat BIGINT NOT NULL DEFAULT 0,
        earnings_delta_msat BIGINT NOT NULL DEFAULT 0,
        memo TEXT,
        CHECK (custody_delta_msat
               = balance_delta_msat + reserved_delta_msat + earnings_delta_msat)
    );
    CREATE FUNCTION journal_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'journal is append-only'; END $$;
    CREATE TRIGGER journal_append_only BEFORE UPDATE OR DELETE ON journal
        FOR EACH ROW EXECUTE FUNCTION journal_append_only();
    CREATE TRIGGER journal_no_truncate BEFORE TRUNCATE ON journal
        FOR EACH STATEMENT EXECUTE FUNCTION journal_append_only();
    CREATE FUNCTION journal_names_the_accounts_latest() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE accounts SET last_journal_id = NEW.id WHERE id = NEW.account_id;
            RETURN NULL;
        END $$;
    CREATE TRIGGER journal_names_the_accounts_latest AFTER INSERT ON journal
        FOR EACH ROW WHEN (NEW.account_id IS NOT NULL)
        EXECUTE FUNCTION journal_names_the_accounts_latest();
    CREATE TABLE proofs (
        id BIGSERIAL PRIMARY KEY,
        mint_url TEXT NOT NULL,
        keyset_id TEXT NOT NULL,
        amount BIGINT NOT NULL CHECK (amount > 0),
        secret TEXT NOT NULL,
        c TEXT NOT NULL,
        y TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL CHECK (state IN ('unspent', 'pending', 'spent', 'sent')),
        operation_id BIGINT,
        outgoing_token_id BIGINT,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX proofs_unspent ON proofs (mint_url, amount, id) WHERE state = 'unspent';
    CREATE INDEX proofs_pending_by_operation ON proofs (operation_id) WHERE state = 'pending';
    CREATE INDEX proofs_by_outgoing_token ON proofs (outgoing_token_id)
        WHERE outgoing_token_id IS NOT NULL;
    CREATE TABLE counters (
        keyset_id TEXT PRIMARY KEY,
        next BIGINT NOT NULL
    );
    CREATE TABLE operations (
        id BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('receive', 'swap', 'melt', 'mint')),
        mint_url TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
        token_id TEXT,
        foreign_inputs TEXT,
        intent TEXT NOT NULL,
        quote_id TEXT,
        result TEXT,
        error TEXT,
        created_at BIGINT NOT NULL,
        finished_at BIGINT
    );
    CREATE UNIQUE INDEX operations_live_token ON operations (token_id)
        WHERE token_id IS NOT NULL AND state != 'failed';
    CREATE INDEX operations_pending ON operations (state) WHERE state = 'pending';
    CREATE TABLE operation_outputs (
        operation_id BIGINT NOT NULL REFERENCES operations (id),
        idx INTEGER NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('keep', 'send', 'change')),
        keyset_id TEXT NOT NULL,
        amount BIGINT NOT NULL,
        counter BIGINT NOT NULL,
        secret TEXT NOT NULL,
        r TEXT NOT NULL,
        b_ TEXT NOT NULL,
        PRIMARY KEY (operation_id, idx)
    );
    CREATE INDEX operation_outputs_counter ON operation_outputs (keyset_id, counter);
    CREATE TABLE outgoing_tokens (
        id BIGSERIAL PRIMARY KEY,
        account_id BIGINT REFERENCES accounts (id),
        purpose TEXT NOT NULL,
        mint_url TEXT NOT NULL,
        amount_sat BIGINT NOT NULL,
        token TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX outgoing_by_account ON outgoing_tokens (account_id, purpose);
    CREATE TABLE invoices (
        id TEXT PRIMARY KEY,
        secret_hash TEXT NOT NULL,
        mint_url TEXT NOT NULL,
        quote_id TEXT NOT NULL UNIQUE,
        bolt11 TEXT NOT NULL,
        amount_sat BIGINT NOT NULL CHECK (amount_sat > 0),
        state TEXT NOT NULL
            CHECK (state IN ('unpaid', 'minting', 'paid', 'expired', 'failed')),
        account_id BIGINT REFERENCES accounts (id),
        credited_account_id BIGINT REFERENCES accounts (id),
        credited_msat BIGINT CHECK (credited_msat >= 0),
        operation_id BIGINT REFERENCES operations (id),
        keys_delivered_at BIGINT,
        expires_at BIGINT,
        created_at BIGINT NOT NULL,
        paid_at BIGINT
    );
    CREATE INDEX invoices_open ON invoices (state) WHERE state IN ('unpaid', 'minting');
    CREATE TABLE node_settings (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        overrides TEXT NOT NULL DEFAULT '{}',
        admin_password_hash TEXT,
        admin_password_origin TEXT CHECK (admin_password_origin IN ('generated', 'admin')),
        updated_at BIGINT NOT NULL
    );
    """,
    # 2: what several processes share beyond the ledger: the wallet's seed (every output
    # is derived from it, in every process), leases (a node-wide job held by one process
    # at a time, until it expires: a process that dies lets go), and earnings paid out
    """
    CREATE TABLE wallet_seed (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seed TEXT NOT NULL
    );
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE TABLE payouts (
        id BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('token', 'invoice', 'lightning_address')),
        idempotency_key TEXT UNIQUE,
        account_id BIGINT NOT NULL UNIQUE REFERENCES accounts (id),
        mint_url TEXT NOT NULL,
        held_msat BIGINT NOT NULL CHECK (held_msat > 0),
        asked_sat BIGINT,
        destination TEXT,
        state TEXT NOT NULL CHECK (state IN ('pending', 'paid', 'failed')),
        amount_sat BIGINT,
        fee_sat BIGINT,
        token TEXT,
        error_code TEXT,
        error TEXT,
        created_at BIGINT NOT NULL,
        finished_at BIGINT
    );
    CREATE INDEX payouts_open ON payouts (state) WHERE state = 'pending';
    -- the process that holds a reservation or wrote an operation (its connections name
    -- it): another process settles or finishes them only once that one's lease ran out
    ALTER TABLE reservations ADD COLUMN holder TEXT
        DEFAULT current_setting('routstr.holder', true);
    ALTER TABLE operations ADD COLUMN holder TEXT
        DEFAULT current_setting('routstr.holder', true);
    """,
    # 3: the node's generated Nostr key (no nsec configured): every process announces
    # and answers under the same npub, whichever data_dir it has
    """
    CREATE TABLE nostr_key (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        secret TEXT NOT NULL
    );
    """,
    # 4: the rate limiter's counts, shared so that a limit holds across processes; one
    # row per (payer or address hash, window size), its window's start moving on in place.
    # UNLOGGED: written on every request, and worth nothing after a crash of the server
    """
    CREATE UNLOGGED TABLE request_counts (
        key_hash TEXT NOT NULL,
        size_s INTEGER NOT NULL,
        start_s BIGINT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (key_hash, size_s)
    );
    """,
]

_LOCK_KEY = 0x726F75747374  # advisory lock: one process migrates at a time


async def migrate(conn: Any) -> None:
    """Bring the database to the newest schema, one numbered step at a time; processes
    starting together wait for the first one's migration."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (id INTEGER PRIMARY KEY CHECK (id = 1),"
            " version INTEGER NOT NULL)"
        )
        await conn.execute(
            "INSERT INTO schema_version (id, version) VALUES (1, 0) ON CONFLICT DO NOTHING"
        )
        version = int(await conn.fetchval("SELECT version FROM schema_version WHERE id = 1"))
        for number, script in enumerate(MIGRATIONS, start=1):
            if number <= version:
                continue
            async with conn.transaction():
                await conn.execute(script)
                await conn.execute("UPDATE schema_version SET version = $1 WHERE id = 1", number)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
