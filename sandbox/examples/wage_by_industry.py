"""Wage level by industry and year, as DP statistics (job service `labour-analysis`).

On a DP service this code runs only on the synthetic sample, to make the job's plan: the DP
means and counts it asks for. Reviewers approve the code and that plan; the gateway then computes
the plan on the real data and runs none of this code there. What it prints is for the reviewers.
"""

import veilgate_job as vg

table = vg.dataset("social_insurance")
years = sorted({month.year for month in table.column("month").to_pylist() if month is not None})
print(f"{table.num_rows} rows over the years {years[0]}-{years[-1]}")  # shown to reviewers only

vg.dp("mean_wage_by_industry", "mean", "social_insurance", column="wage_base", group_by=["industry"])
vg.dp("records_by_industry_paid", "count", "social_insurance", group_by=["industry"], filters={"paid": [True]})
