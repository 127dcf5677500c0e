"""The state layer: typed ports for the stores (`ports`), their SQLite and PostgreSQL backends,
versioned migrations, and the one place that picks a backend from the settings (`backend`).

Below the services, above the connection helpers (`sqlite_files`, `postgres_db`). A store's
rules are written once, against its tables; a backend only says how to open a transaction,
how to read, and how other processes learn of a change.
"""
