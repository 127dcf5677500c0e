"""Wage level by industry and year, as DP statistics (job service `labour-analysis`).

The job looks at the data to decide what to ask (here: which years it holds), then asks the
gateway for DP means and counts; it never sees their values, and nothing else leaves.
"""

import veilgate_job as vg

table = vg.dataset("social_insurance")
years = sorted({month.year for month in table.column("month").to_pylist() if month is not None})
print(f"{table.num_rows} rows over the years {years[0]}-{years[-1]}")  # shown to reviewers only

vg.dp("mean_wage_by_industry", "mean", "social_insurance", column="wage_base", group_by=["industry"])
vg.dp("records_by_industry_paid", "count", "social_insurance", group_by=["industry"], filters={"paid": [True]})
