"""The one Spark session of a process, started on first use.

Spark's driver is a JVM; one per gateway process is enough, and starting it costs seconds, so it
is created once and shared by registrations and snapshots. A missing extra or Java is an
operator's configuration problem, reported as such.
"""

from __future__ import annotations

import shutil
import threading
from typing import TYPE_CHECKING

from gateway.errors import ConfigurationError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_lock = threading.Lock()


def missing_requirement() -> str | None:
    """Why the Spark engine cannot run here, or None when it can."""
    try:
        import pyspark  # noqa: F401, PLC0415 - optional extra
    except ImportError:
        return "the spark engine needs the veilgate[spark] extra (pip install 'veilgate[spark]')"
    if shutil.which("java") is None:
        return "the spark engine needs Java 17 (Debian: apt-get install openjdk-17-jre-headless)"
    return None


def spark_session(master: str) -> SparkSession:
    """The process's Spark session on `master` (e.g. local[*], spark://host:7077, yarn)."""
    reason = missing_requirement()
    if reason is not None:
        raise ConfigurationError(reason)
    from pyspark.sql import SparkSession  # noqa: PLC0415 - optional extra

    with _lock:
        return (
            SparkSession.builder.master(master)
            .appName("veilgate")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.session.timeZone", "UTC")
            # Exact integer arithmetic: an overflow must fail, never wrap (sums are DECIMAL(38)).
            .config("spark.sql.ansi.enabled", "true")
            .getOrCreate()
        )
