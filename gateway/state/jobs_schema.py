"""The job store's table: its layout, the steps that bring a store of before to it, and the
statements the rules and the backends share (built once from constant column names)."""

from __future__ import annotations

from gateway.state.migrations import Execute, Step

__all__ = ["COLUMNS", "INSERT", "SELECT", "SELECT_ONE", "STEPS", "STORE"]

STORE = "jobs"
_FIRST = """CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, submitter TEXT NOT NULL, organisation TEXT NOT NULL, service TEXT NOT NULL,
    purpose TEXT NOT NULL, grant_id TEXT NOT NULL, code TEXT NOT NULL, code_kind TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,
    datasets TEXT NOT NULL, outputs TEXT NOT NULL, epsilon TEXT, status TEXT NOT NULL,
    reviews TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL,
    result TEXT, stdout TEXT, stderr TEXT, reason TEXT, runner TEXT)"""
_ADDED = (
    ("runner", "TEXT"),
    ("attempt", "INTEGER NOT NULL DEFAULT 0"),
    ("plan", "TEXT"),
    ("plan_sha256", "TEXT"),
    ("notes", "TEXT"),
    ("tables", "TEXT"),
    ("held", "TEXT"),
)
"""Columns job stores made before versioned migrations may lack, each store a different set."""


def _add_missing_columns(execute: Execute) -> None:
    """Add what a store of before lacks (SQLite has no ADD COLUMN IF NOT EXISTS); the column
    names come from the cursor's description, which both drivers give."""
    present = {column[0] for column in execute("SELECT * FROM jobs LIMIT 0").description}
    for name, kind in _ADDED:
        if name not in present:
            execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")  # from _ADDED, a constant


STEPS = (Step(1, (_FIRST,)), Step(2, (), _add_missing_columns))
"""1: the layout stores had before their columns were added one by one; 2: every column added
since (runs, plans, notes, declared tables, held outputs), each only where it is missing."""

COLUMNS = (
    "id, submitter, organisation, service, purpose, grant_id, code, code_kind, code_sha256, datasets, outputs, "
    "epsilon, status, reviews, created, updated, result, stdout, stderr, reason, attempt, plan, plan_sha256, notes, "
    "tables, held"
)
# SQL text is built once, here, from the constant column list above; values are always bound.
INSERT = f"INSERT INTO jobs ({COLUMNS}) VALUES ({', '.join('?' * len(COLUMNS.split(',')))})"  # noqa: S608
SELECT = f"SELECT {COLUMNS} FROM jobs"  # noqa: S608
SELECT_ONE = SELECT + " WHERE id = ?"
