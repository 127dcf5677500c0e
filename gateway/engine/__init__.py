"""The data domain: building dataset versions and serving them read-only.

Owns every DuckDB connection (only this package imports DuckDB). Imports no other leaf; it
receives catalogue entries (domain types), plans and paths. Invariants it protects:
- SQL is built only from identifiers that the catalogue validated (and quotes them) and from
  bound parameters; no caller-supplied text is ever spliced into SQL.
- Serving connections are read-only, with external file and network access disabled,
  extension autoloading off and the configuration locked before the first query.
- A version file is written under a temporary name and renamed into place complete;
  a snapshot keeps its connection open until it ends, so a request in flight finishes on the
  version it started on while new requests see the new one.
- Errors never carry a data value or a SQL text: DuckDB errors are wrapped with a message
  that names the column and the check, and counts of offending rows.

Modules: `sql` (quoting, types), `checks` (a source against its entry), `build` (a version
file), `plan_sql` (a plan's query), `snapshot` (one version for one request), `serving` (the
open versions).
"""

from gateway.engine.build import (
    BuildLimits,
    BuildReport,
    ProgressFn,
    build_version,
    content_version,
    marker_path,
    version_path,
)
from gateway.engine.plan_sql import regular_grid
from gateway.engine.serving import SERVING_CONFIG, Domain
from gateway.engine.snapshot import Snapshot
from gateway.engine.sql import COUNT_SQL, TABLE, quote

__all__ = [
    "COUNT_SQL",
    "SERVING_CONFIG",
    "TABLE",
    "BuildLimits",
    "BuildReport",
    "Domain",
    "ProgressFn",
    "Snapshot",
    "build_version",
    "content_version",
    "marker_path",
    "quote",
    "regular_grid",
    "version_path",
]
