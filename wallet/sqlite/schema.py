"""Schema migrations, numbered from the first version on.

Every journal row must balance: the change in custody (proofs the node holds) equals the
change in balances + reserved + earnings. SQLite enforces it, and the journal is
append-only, so the audit can recompute every total from it.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('key', 'token', 'xcashu')),
        key_hash TEXT UNIQUE,
        admin_key_hash TEXT UNIQUE,
        token_id TEXT UNIQUE,
        mint_url TEXT,
        balance_msat INTEGER NOT NULL DEFAULT 0 CHECK (balance_msat >= 0),
        reserved_msat INTEGER NOT NULL DEFAULT 0 CHECK (reserved_msat >= 0),
        created_at INTEGER NOT NULL
    );
    CREATE TABLE reservations (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        amount_msat INTEGER NOT NULL CHECK (amount_msat >= 0),
        state TEXT NOT NULL CHECK (state IN ('open', 'charged', 'released')),
        charged_msat INTEGER,
        purpose TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        settled_at INTEGER
    );
    CREATE INDEX reservations_open ON reservations (state) WHERE state = 'open';
    CREATE TABLE earnings (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        amount_msat INTEGER NOT NULL CHECK (amount_msat >= 0)
    );
    INSERT INTO earnings (id, amount_msat) VALUES (1, 0);
    CREATE TABLE journal (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        account_id INTEGER,
        reservation_id INTEGER,
        operation_id INTEGER,
        custody_delta_msat INTEGER NOT NULL DEFAULT 0,
        balance_delta_msat INTEGER NOT NULL DEFAULT 0,
        reserved_delta_msat INTEGER NOT NULL DEFAULT 0,
        earnings_delta_msat INTEGER NOT NULL DEFAULT 0,
        memo TEXT,
        CHECK (custody_delta_msat
               = balance_delta_msat + reserved_delta_msat + earnings_delta_msat)
    );
    CREATE INDEX journal_account ON journal (account_id);
    CREATE TRIGGER journal_append_only_update BEFORE UPDATE ON journal
        BEGIN SELECT RAISE(ABORT, 'journal is append-only'); END;
    CREATE TRIGGER journal_append_only_delete BEFORE DELETE ON journal
        BEGIN SELECT RAISE(ABORT, 'journal is append-only'); END;
    CREATE TRIGGER journal_append_only_replace BEFORE INSERT ON journal
        WHEN NEW.id IS NOT NULL AND EXISTS (SELECT 1 FROM journal WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'journal is append-only'); END;
    CREATE TABLE proofs (
        id INTEGER PRIMARY KEY,
        mint_url TEXT NOT NULL,
        keyset_id TEXT NOT NULL,
        amount INTEGER NOT NULL CHECK (amount > 0),
        secret TEXT NOT NULL UNIQUE,
        c TEXT NOT NULL,
        y TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL CHECK (state IN ('unspent', 'pending', 'spent', 'sent')),
        operation_id INTEGER,
        outgoing_token_id INTEGER,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX proofs_by_state ON proofs (mint_url, state, amount);
    CREATE TABLE counters (
        keyset_id TEXT PRIMARY KEY,
        next INTEGER NOT NULL
    );
    CREATE TABLE operations (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('receive', 'swap', 'melt', 'mint')),
        mint_url TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
        token_id TEXT,
        foreign_inputs TEXT,
        intent TEXT NOT NULL,
        quote_id TEXT,
        result TEXT,
        error TEXT,
        created_at INTEGER NOT NULL,
        finished_at INTEGER
    );
    CREATE UNIQUE INDEX operations_live_token ON operations (token_id)
        WHERE token_id IS NOT NULL AND state != 'failed';
    CREATE INDEX operations_pending ON operations (state) WHERE state = 'pending';
    CREATE TABLE operation_outputs (
        operation_id INTEGER NOT NULL REFERENCES operations (id),
        idx INTEGER NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('keep', 'send', 'change')),
        keyset_id TEXT NOT NULL,
        amount INTEGER NOT NULL,
        counter INTEGER NOT NULL,
        secret TEXT NOT NULL,
        r TEXT NOT NULL,
        b_ TEXT NOT NULL,
        PRIMARY KEY (operation_id, idx)
    );
    CREATE TABLE outgoing_tokens (
        id INTEGER PRIMARY KEY,
        account_id INTEGER REFERENCES accounts (id),
        purpose TEXT NOT NULL,
        mint_url TEXT NOT NULL,
        amount_sat INTEGER NOT NULL,
        token TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX outgoing_by_account ON outgoing_tokens (account_id, purpose);
    """,
    # 2: Lightning in. An invoice is a NUT-04 mint quote the node asked for on behalf of
    # an account (account_id) or of a new one (account_id NULL, keys handed once to the
    # holder of the invoice's secret, of which only the hash is kept).
    """
    CREATE TABLE invoices (
        id TEXT PRIMARY KEY,
        secret_hash TEXT NOT NULL,
        mint_url TEXT NOT NULL,
        quote_id TEXT NOT NULL UNIQUE,
        bolt11 TEXT NOT NULL,
        amount_sat INTEGER NOT NULL CHECK (amount_sat > 0),
        state TEXT NOT NULL
            CHECK (state IN ('unpaid', 'minting', 'paid', 'expired', 'failed')),
        account_id INTEGER REFERENCES accounts (id),
        credited_account_id INTEGER REFERENCES accounts (id),
        credited_msat INTEGER CHECK (credited_msat >= 0),
        operation_id INTEGER REFERENCES operations (id),
        keys_delivered_at INTEGER,
        expires_at INTEGER,
        created_at INTEGER NOT NULL,
        paid_at INTEGER
    );
    CREATE INDEX invoices_open ON invoices (state) WHERE state IN ('unpaid', 'minting');
    """,
    # 3: amounts stay integers. SQLite turns an integer sum past 2^63 into a REAL (a float
    # balance that still passes CHECK >= 0): such a write is refused instead.
    """
    CREATE TRIGGER accounts_msat_are_integers BEFORE UPDATE OF balance_msat, reserved_msat
        ON accounts
        WHEN typeof(NEW.balance_msat) != 'integer' OR typeof(NEW.reserved_msat) != 'integer'
        BEGIN SELECT RAISE(ABORT, 'msat amount out of range'); END;
    CREATE TRIGGER earnings_msat_are_integers BEFORE UPDATE OF amount_msat ON earnings
        WHEN typeof(NEW.amount_msat) != 'integer'
        BEGIN SELECT RAISE(ABORT, 'msat amount out of range'); END;
    """,
    # 4: an account names its latest journal entry instead of an index of the journal by
    # account. Every index page a paid request dirties is two more writes to the WAL per
    # commit (measured: the journal index was a fifth of a reserve+charge pair's time),
    # and the only question asked of it was "what happened last on this account".
    """
    ALTER TABLE accounts ADD COLUMN last_journal_id INTEGER;
    UPDATE accounts SET last_journal_id =
        (SELECT MAX(id) FROM journal WHERE journal.account_id = accounts.id);
    DROP INDEX journal_account;
    CREATE TRIGGER journal_names_the_accounts_latest AFTER INSERT ON journal
        WHEN NEW.account_id IS NOT NULL
        BEGIN UPDATE accounts SET last_journal_id = NEW.id WHERE id = NEW.account_id; END;
    """,
    # 5: what the operator changed in the admin panel, kept beside the money so a backup
    # of data_dir keeps it, and the admin password, only as a hash
    """
    CREATE TABLE node_settings (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        overrides TEXT NOT NULL DEFAULT '{}',
        admin_password_hash TEXT,
        admin_password_origin TEXT CHECK (admin_password_origin IN ('generated', 'admin')),
        updated_at INTEGER NOT NULL
    );
    """,
    # 6: proofs, rebuilt for fewer pages per commit and no scan of their history.
    # - secret loses its UNIQUE index: y = hash_to_curve(secret) stays unique, so a secret
    #   stored twice is still refused, and a random index page per proof is not written
    #   (six per redeem, measured with the WAL's frames).
    # - proofs_by_state (every proof by mint, state and amount) becomes proofs_unspent,
    #   only what custody can spend: coin selection reads a few proofs of each amount
    #   from it instead of every proof at the mint, and spent proofs leave it. Its
    #   entries are kept small (no keyset id): a redeem's six proofs go to six places
    #   in it, and wide entries split pages twice as often (9 WAL frames, now 4.7).
    # - an operation's inputs and a token's proofs are found by index: before, every send
    #   and every refund scanned all proofs the node ever held, spent ones included.
    """
    CREATE TABLE proofs_v6 (
        id INTEGER PRIMARY KEY,
        mint_url TEXT NOT NULL,
        keyset_id TEXT NOT NULL,
        amount INTEGER NOT NULL CHECK (amount > 0),
        secret TEXT NOT NULL,
        c TEXT NOT NULL,
        y TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL CHECK (state IN ('unspent', 'pending', 'spent', 'sent')),
        operation_id INTEGER,
        outgoing_token_id INTEGER,
        created_at INTEGER NOT NULL
    );
    INSERT INTO proofs_v6 (id, mint_url, keyset_id, amount, secret, c, y, state,
                           operation_id, outgoing_token_id, created_at)
        SELECT id, mint_url, keyset_id, amount, secret, c, y, state,
               operation_id, outgoing_token_id, created_at FROM proofs;
    DROP TABLE proofs;
    ALTER TABLE proofs_v6 RENAME TO proofs;
    CREATE INDEX proofs_unspent ON proofs (mint_url, amount, id) WHERE state = 'unspent';
    CREATE INDEX proofs_pending_by_operation ON proofs (operation_id) WHERE state = 'pending';
    CREATE INDEX proofs_by_outgoing_token ON proofs (outgoing_token_id)
        WHERE outgoing_token_id IS NOT NULL;
    """,
    # 7: custody under lost answers and crashes.
    # - keys_used_at: when one of an account's keys first opened it. A create whose
    #   answer was lost answers the same keys again (they are derived from the token and
    #   the node's seed) only while none has been used: once one was, the client has it.
    # - delivered_msat: what an open request's stream has delivered so far, written at
    #   most every second. A node killed mid-stream charges that at its next start
    #   instead of releasing the whole reservation.
    """
    ALTER TABLE accounts ADD COLUMN keys_used_at INTEGER;
    ALTER TABLE reservations ADD COLUMN delivered_msat INTEGER NOT NULL DEFAULT 0
        CHECK (delivered_msat >= 0);
    """,
    # 8: a request's charge names the request (its id, route, model and provider), written
    # by the same UPDATE that charges it. Usage records live in a file of their own,
    # written after the answer; the node rebuilds one from here when it was lost (a
    # crash before the record was written), so a charged request is never unrecorded.
    """
    ALTER TABLE reservations ADD COLUMN request_id TEXT;
    ALTER TABLE reservations ADD COLUMN request_route TEXT;
    ALTER TABLE reservations ADD COLUMN request_model TEXT;
    ALTER TABLE reservations ADD COLUMN request_provider TEXT;
    """,
    # 9: earnings paid out (contract section 13). A payout moves what it may spend from
    # earnings to an account of its own that no key opens, and custody pays the token or
    # invoice from that account as it pays any withdrawal (written ahead, recovered by the
    # one rule); what it did not spend goes back to earnings when it closes. Leases name
    # the one process that does a node-wide job (automatic payouts) when several share
    # the database.
    """
    CREATE TABLE payouts (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('token', 'invoice', 'lightning_address')),
        idempotency_key TEXT UNIQUE,
        account_id INTEGER NOT NULL UNIQUE REFERENCES accounts (id),
        mint_url TEXT NOT NULL,
        held_msat INTEGER NOT NULL CHECK (held_msat > 0),
        asked_sat INTEGER,
        destination TEXT,
        state TEXT NOT NULL CHECK (state IN ('pending', 'paid', 'failed')),
        amount_sat INTEGER,
        fee_sat INTEGER,
        token TEXT,
        error_code TEXT,
        error TEXT,
        created_at INTEGER NOT NULL,
        finished_at INTEGER
    );
    CREATE INDEX payouts_open ON payouts (state) WHERE state = 'pending';
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );
    """,
]


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the database to the newest schema, one numbered step at a time."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    for number, script in enumerate(MIGRATIONS, start=1):
        if number <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    """Split a script on ';' while keeping trigger bodies (BEGIN … END;) whole."""
    statements: list[str] = []
    current = ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                statements.append(current.strip())
            current = ""
    return statements
