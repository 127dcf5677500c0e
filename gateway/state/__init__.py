"""The state layer: typed ports for the stores (`ports`), their SQLite and PostgreSQL backends,
versioned migrations, and the one place that picks a backend from the settings (`backend`).

Below the services. The stores share one connection layer per backend, here too:
`sqlite_connections` (the WAL opener), `postgres_connections` (connections, pools, `committers`),
`postgres_reader` and `postgres_watched` (the shared reader and listener), and group commit
(`group_commit`, `group_commit_loop`, `group_commit_async`). A store's rules are written once,
against its tables; a backend only says how to open a transaction, how to read, and how other
processes learn of a change.
"""
