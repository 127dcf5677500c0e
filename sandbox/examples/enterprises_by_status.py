"""Enterprises by industry and registration status: a table of counts (job service
`enterprise-tables`), released after statistical disclosure control."""

from collections import Counter

import veilgate_job as vg

registry = vg.dataset("enterprise_registry")
counts = Counter(zip(registry.column("industry").to_pylist(), registry.column("status").to_pylist(), strict=True))
rows = [{"industry": i, "status": s, "enterprises": n} for (i, s), n in sorted(counts.items())]
vg.table("enterprises_by_status", rows, keys=["industry", "status"], counts=["enterprises"])
