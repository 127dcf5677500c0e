"""The one Spark session of a process, started on first use.

Spark's driver is a JVM; one per gateway process is enough, and starting it costs seconds, so it
is created once and shared by registrations and snapshots. A missing extra or Java is an
operator's configuration problem, reported as such.
"""

from __future__ import annotations

import os
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


def local_cores(master: str) -> int | None:
    """The cores of a local master (local, local[4], local[*], local[2,3]), None for a cluster."""
    if master == "local":
        return 1
    if not (master.startswith("local[") and master.endswith("]")):
        return None
    threads = master[len("local[") : -1].split(",", maxsplit=1)[0]
    if threads == "*":
        return os.cpu_count() or 1
    return int(threads) if threads.isdigit() and int(threads) > 0 else None


def spark_session(master: str) -> SparkSession:
    """The process's Spark session on `master` (e.g. local[*], spark://host:7077, yarn)."""
    reason = missing_requirement()
    if reason is not None:
        raise ConfigurationError(reason)
    from pyspark.sql import SparkSession  # noqa: PLC0415 - optional extra

    builder = SparkSession.builder.master(master).appName("veilgate")
    cores = local_cores(master)
    if cores is not None:
        # Spark's default of 200 shuffle partitions is sized for a cluster: on one machine every
        # aggregate then runs 200 tiny reduce tasks and streams keys back in 200 jobs. A few
        # per core keeps every core busy and each task large.
        builder = builder.config("spark.sql.shuffle.partitions", str(max(2, 2 * cores)))
    with _lock:
        return (
            builder.config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.session.timeZone", "UTC")
            # Exact integer arithmetic: an overflow must fail, never wrap (sums are DECIMAL(38)).
            .config("spark.sql.ansi.enabled", "true")
            .getOrCreate()
        )
