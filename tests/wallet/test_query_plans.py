"""No statement on the request path reads a table's whole history.

Proofs, operations, journal entries and reservations only ever grow: a statement that
scans one of them gets slower with every request the node has served, and it runs
while a request waits (writes run on the event loop's thread). Every SQL statement in
wallet/sqlite is read from the source and its query plan asked from SQLite, so a new
statement cannot slip past this.
"""

from __future__ import annotations

import ast
import importlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

import wallet.sqlite
from wallet.sqlite.schema import migrate

SQL_DIR = Path(wallet.sqlite.__file__).parent
GROWING = {
    "proofs",
    "operations",
    "operation_outputs",
    "journal",
    "reservations",
    "accounts",
    "outgoing_tokens",
    "invoices",
}
# the audit and the books recount everything on purpose: run by the operator, never by a
# request
READS_EVERYTHING = {"audit.py", "books.py"}
# what an f-string inside a statement may stand for
FORMATTED = {
    "marks": ["?"],
    "column": ["key_hash", "admin_key_hash", "token_id"],
    "assignments": ["overrides = ?"],
}


@dataclass(frozen=True)
class Statement:
    where: str  # file:function
    sql: str


def _is_statement(text: str) -> bool:
    head = text.lstrip().split(" ", 1)[0].upper()
    return head in {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH"}


def _variants(node: ast.expr, module: ModuleType) -> list[str]:
    """The statement a string in the source is, once per value its f-string parts take:
    what they are in the module (its constants), or what FORMATTED says a local is."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value] if _is_statement(node.value) else []
    if not isinstance(node, ast.JoinedStr) or not node.values:
        return []
    first = node.values[0]
    if not (isinstance(first, ast.Constant) and _is_statement(str(first.value))):
        return []
    texts = [""]
    for part in node.values:
        if isinstance(part, ast.Constant):
            texts = [t + str(part.value) for t in texts]
            continue
        assert isinstance(part, ast.FormattedValue)
        name = ast.unparse(part.value)
        try:  # a module constant, or an expression over them
            constant = eval(name, vars(module))  # the project's own source, nothing else
        except NameError:
            constant = None
        if isinstance(constant, str):
            values = [constant]
        elif name in FORMATTED:
            values = FORMATTED[name]
        else:
            pytest.fail(f"a statement formats {{{name}}}: say here what it stands for")
        texts = [t + value for t in texts for value in values]
    return texts


def _statements() -> Iterator[Statement]:
    for path in sorted(SQL_DIR.glob("*.py")):
        if path.name == "schema.py":
            continue
        module = importlib.import_module(f"wallet.sqlite.{path.stem}")
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            # an f-string's literal parts are visited too: only the whole is a statement
            parts = {
                id(part)
                for node in ast.walk(function)
                if isinstance(node, ast.JoinedStr)
                for part in node.values
            }
            for node in ast.walk(function):
                if not isinstance(node, ast.expr) or id(node) in parts:
                    continue
                for text in _variants(node, module):
                    yield Statement(f"{path.name}:{function.name}", text)


@pytest.fixture(scope="module")
def conn() -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    migrate(connection)
    yield connection
    connection.close()


def _scans(conn: sqlite3.Connection, sql: str) -> list[str]:
    plan = conn.execute("EXPLAIN QUERY PLAN " + sql, [None] * sql.count("?")).fetchall()
    scanned = []
    for row in plan:
        words = str(row[3]).split()
        if words[0] == "SCAN" and words[1] in GROWING:
            scanned.append(str(row[3]))
    return scanned


def test_the_statements_are_found() -> None:
    """The sweep sees the statements it is meant to judge (else it judges nothing)."""
    where = {s.where for s in _statements()}
    assert len(where) > 40
    assert {"custody.py:operation_inputs", "ledger.py:reserve", "ledger.py:settle"} <= where


def test_no_statement_on_the_request_path_scans_a_growing_table(
    conn: sqlite3.Connection,
) -> None:
    offenders = [
        f"{s.where}: {scan}\n    {s.sql}"
        for s in _statements()
        if s.where.split(":")[0] not in READS_EVERYTHING
        for scan in _scans(conn, s.sql)
    ]
    assert offenders == [], "\n".join(offenders)


def test_the_sweep_catches_a_scan(conn: sqlite3.Connection) -> None:
    assert _scans(conn, "SELECT y FROM proofs WHERE c = ?") == ["SCAN proofs"]
    assert _scans(conn, "SELECT DISTINCT mint_url FROM proofs WHERE state = 'unspent'")


def test_held_mints_are_the_ones_with_unspent_proofs(conn: sqlite3.Connection) -> None:
    """The index hop from mint to mint gives what DISTINCT gave."""
    from wallet.sqlite.custody import held_mint_urls

    conn.execute("BEGIN")
    try:
        assert held_mint_urls(conn) == []
        rows = [("b", "spent"), ("a", "unspent"), ("c", "unspent"), ("a", "spent")]
        rows += [("d", "pending"), ("c", "spent"), ("e", "sent"), ("a", "unspent")]
        for i, (mint, state) in enumerate(rows):
            conn.execute(
                "INSERT INTO proofs (mint_url, keyset_id, amount, secret, c, y, state,"
                " created_at) VALUES (?, '00', 1, ?, 'c', ?, ?, 0)",
                (mint, f"s{i}", f"y{i}", state),
            )
        assert held_mint_urls(conn) == ["a", "c"]
    finally:
        conn.execute("ROLLBACK")


def test_selection_reads_the_oldest_few_of_each_amount(conn: sqlite3.Connection) -> None:
    from wallet.sqlite.custody import selectable_coins

    conn.execute("BEGIN")
    try:
        rows = [("a", 1, "unspent")] * 5 + [("a", 4, "unspent")] * 2 + [("a", 8, "spent")]
        rows += [("a", 2, "pending"), ("b", 1, "unspent"), ("a", 64, "unspent")]
        for i, (mint, amount, state) in enumerate(rows):
            conn.execute(
                "INSERT INTO proofs (id, mint_url, keyset_id, amount, secret, c, y, state,"
                " created_at) VALUES (?, ?, 'k', ?, ?, 'c', ?, ?, 0)",
                (i + 1, mint, amount, f"s{i}", f"y{i}", state),
            )
        few, left_out = selectable_coins(conn, "a", per_amount=3)
        assert [(c.id, c.amount) for c in few] == [(1, 1), (2, 1), (3, 1), (6, 4), (7, 4), (11, 64)]
        assert left_out
        every, left_out = selectable_coins(conn, "a", per_amount=None)
        assert sorted(c.id for c in every) == [1, 2, 3, 4, 5, 6, 7, 11] and not left_out
        assert selectable_coins(conn, "a", per_amount=5) == (every, False)
        assert selectable_coins(conn, "c") == ([], False)
    finally:
        conn.execute("ROLLBACK")
