"""The Spark engine: the same catalogue entries and plans, executed by PySpark on Parquet.

For data beyond one machine (a dataset whose catalogue entry says `engine: spark`). Only this
subpackage imports PySpark, and nothing imports it unless such a dataset is registered or
served, so the `veilgate[spark]` extra and Java are needed only then. Invariants:
- Spark computes exact pre-noise statistics only; noise is drawn in the gateway by the same
  privacy code as for DuckDB, never in an executor.
- The exact values equal DuckDB's on the same data (tests/engine/test_spark_equality.py):
  the same checks, the same contribution bound (same order of rows), the same clamping,
  rounding and binning.
- Expressions are built from catalogue identifiers and plan values as Spark columns and
  literals, never as SQL text.
"""
