"""Deterministic synthetic public data for the demo domain, tests and benchmarks.

Owns nothing but files under the output directory. Imports no other leaf. Every identifier it
makes has valid check characters, so registration and verification treat it like real data;
no value is taken from any real register. The same (scale, seed, canary) gives the same bytes.

Datasets (privacy unit in brackets):
- enterprise_registry [enterprise]: one row per enterprise.
- social_insurance [person]: monthly contribution records, 1-40 months per person.
- tax_compliance [enterprise]: one row per enterprise and tax year.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gateway.domain.identifiers import USCC_ALPHABET, org_code_check_char, resident_id_check_char, uscc_check_char

ProgressFn = Callable[[str, int, int], None]
"""(dataset, rows done, rows total)."""

PROVINCES = (
    ("11", "北京"),
    ("12", "天津"),
    ("13", "石家庄"),
    ("14", "太原"),
    ("15", "呼和浩特"),
    ("21", "沈阳"),
    ("22", "长春"),
    ("23", "哈尔滨"),
    ("31", "上海"),
    ("32", "南京"),
    ("33", "杭州"),
    ("34", "合肥"),
    ("35", "福州"),
    ("36", "南昌"),
    ("37", "济南"),
    ("41", "郑州"),
    ("42", "武汉"),
    ("43", "长沙"),
    ("44", "广州"),
    ("45", "南宁"),
    ("46", "海口"),
    ("50", "重庆"),
    ("51", "成都"),
    ("52", "贵阳"),
    ("53", "昆明"),
    ("54", "拉萨"),
    ("61", "西安"),
    ("62", "兰州"),
    ("63", "西宁"),
    ("64", "银川"),
    ("65", "乌鲁木齐"),
)
# Weights roughly following where enterprises are registered: coastal provinces dominate.
_PROVINCE_WEIGHTS = np.array(
    [
        5,
        2,
        3,
        1.5,
        1,
        2.5,
        1.2,
        1.5,
        5,
        9,
        8,
        3.5,
        3.5,
        2,
        6.5,
        4.5,
        3.5,
        3,
        12,
        2,
        0.8,
        2.5,
        4.5,
        1.5,
        1.8,
        0.3,
        2.5,
        0.8,
        0.3,
        0.4,
        1,
    ],
)
INDUSTRIES = tuple("ABCDEFGHIJKLMNOPQRST")  # GB/T 4754-2017 sections
_INDUSTRY_WEIGHTS = np.array([2, 0.5, 14, 1, 1, 6, 30, 3, 4, 9, 1, 1, 8, 6, 1, 2, 1, 1, 1, 0.5])
_INDUSTRY_WORDS = {
    "A": "农业",
    "B": "矿业",
    "C": "制造",
    "D": "能源",
    "E": "水务",
    "F": "建设",
    "G": "商贸",
    "H": "物流",
    "I": "餐饮",
    "J": "科技",
    "K": "金融",
    "L": "置业",
    "M": "商务",
    "N": "科研",
    "O": "环境",
    "P": "家政",
    "Q": "教育",
    "R": "医疗",
    "S": "文化",
    "T": "服务",
}
STATUSES = ("active", "revoked", "cancelled")
TAX_RATINGS = ("A", "B", "M", "C", "D")
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉萍红娥玲芬燕彬斌宇浩凯健俊帆帅旭宁欣悦琳晨"
_TRADE_WORDS = "恒达华信瑞丰鼎盛宏远新锐安泰博通天元正和永兴金诚海川嘉禾德隆"
_SUFFIXES = ("有限公司", "有限责任公司", "股份有限公司")
_LAST_MONTH = date(2026, 10, 1)
_TAX_YEARS = (2021, 2022, 2023, 2024, 2025)
ENTERPRISES_PER_SCALE = 10_000
PERSONS_PER_SCALE = 20_000
_PERSON_CHUNK = 50_000


@dataclass(frozen=True, slots=True)
class DemoSummary:
    rows: dict[str, int]
    files: dict[str, Path]


def catalog_entry_text(dataset: str) -> str:
    """The demo's catalogue entry for `dataset`, shipped with the package."""
    return resources.files("gateway").joinpath("demo_catalog", f"{dataset}.yaml").read_text(encoding="utf-8")


DATASETS = ("enterprise_registry", "social_insurance", "tax_compliance")


def generate(
    out: Path,
    *,
    scale: float = 1.0,
    seed: int = 20261128,
    canary: str | None = None,
    progress: ProgressFn = lambda _d, _n, _t: None,
) -> DemoSummary:
    """Write the three demo datasets as Parquet and their catalogue entries as YAML into `out`."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_enterprises = max(20, round(ENTERPRISES_PER_SCALE * scale))
    n_persons = max(20, round(PERSONS_PER_SCALE * scale))
    files = {name: out / f"{name}.parquet" for name in DATASETS}
    registry = _enterprises(rng, n_enterprises, canary)
    pq.write_table(registry, files["enterprise_registry"])
    progress("enterprise_registry", n_enterprises, n_enterprises)
    tax = _tax(rng, registry)
    pq.write_table(tax, files["tax_compliance"])
    progress("tax_compliance", tax.num_rows, tax.num_rows)
    social_rows = _social_insurance(rng, registry, n_persons, files["social_insurance"], progress)
    for name in DATASETS:
        (out / f"{name}.yaml").write_text(catalog_entry_text(name), encoding="utf-8")
    return DemoSummary(
        rows={"enterprise_registry": n_enterprises, "social_insurance": social_rows, "tax_compliance": tax.num_rows},
        files=files,
    )


def _district_codes(rng: np.random.Generator, provinces: np.ndarray) -> list[str]:
    cities = rng.integers(1, 10, size=len(provinces))
    districts = rng.integers(1, 20, size=len(provinces))
    return [f"{PROVINCES[p][0]}{c:02d}{d:02d}" for p, c, d in zip(provinces, cities, districts, strict=True)]


def _credit_codes(rng: np.random.Generator, districts: list[str]) -> list[str]:
    alphabet = np.array(list(USCC_ALPHABET))
    codes: list[str] = []
    seen: set[str] = set()
    bodies = alphabet[rng.integers(0, len(USCC_ALPHABET), size=(len(districts), 8))]
    for district, body_chars in zip(districts, bodies, strict=True):
        body = "".join(body_chars)
        while True:
            org = body + org_code_check_char(body)
            first17 = "91" + district + org
            code = first17 + uscc_check_char(first17)
            if code not in seen:
                break
            body = "".join(alphabet[rng.integers(0, len(USCC_ALPHABET), size=8)])
        seen.add(code)
        codes.append(code)
    return codes


def _person_names(rng: np.random.Generator, n: int) -> list[str]:
    surnames = rng.integers(0, len(_SURNAMES), size=n)
    given1 = rng.integers(0, len(_GIVEN), size=n)
    given2 = rng.integers(-len(_GIVEN) // 2, len(_GIVEN), size=n)  # about a third have one given character
    return [
        _SURNAMES[s] + _GIVEN[g1] + (_GIVEN[g2] if g2 >= 0 else "")
        for s, g1, g2 in zip(surnames, given1, given2, strict=True)
    ]


def _enterprises(rng: np.random.Generator, n: int, canary: str | None) -> pa.Table:
    provinces = rng.choice(len(PROVINCES), size=n, p=_PROVINCE_WEIGHTS / _PROVINCE_WEIGHTS.sum())
    districts = _district_codes(rng, provinces)
    industries = rng.choice(len(INDUSTRIES), size=n, p=_INDUSTRY_WEIGHTS / _INDUSTRY_WEIGHTS.sum())
    trade = rng.integers(0, len(_TRADE_WORDS) - 1, size=n)
    suffix = rng.choice(len(_SUFFIXES), size=n, p=[0.8, 0.12, 0.08])
    names = [
        f"{PROVINCES[p][1]}{_TRADE_WORDS[t : t + 2]}{_INDUSTRY_WORDS[INDUSTRIES[i]]}{_SUFFIXES[s]}"
        for p, t, i, s in zip(provinces, trade, industries, suffix, strict=True)
    ]
    representatives = _person_names(rng, n)
    if canary is not None:
        # SECURITY: the canary sits in the first enterprise, so any leak of raw values shows it.
        names[0] = f"{canary}有限公司"
        representatives[0] = canary
    capital = np.clip(np.round(rng.lognormal(14.2, 1.6, size=n), -3), 10_000, 5_000_000_000).astype(np.int64)
    status = rng.choice(len(STATUSES), size=n, p=[0.85, 0.05, 0.10])
    start = np.datetime64("1995-01-01")
    span = (np.datetime64("2026-06-30") - start).astype(int)
    established = start + np.sort(rng.integers(0, span, size=n)).astype("timedelta64[D]")
    rng.shuffle(established)
    return pa.table(
        {
            "credit_code": pa.array(_credit_codes(rng, districts), pa.string()),
            "name": pa.array(names, pa.string()),
            "legal_representative": pa.array(representatives, pa.string()),
            "registered_capital": pa.array(capital, pa.int64()),
            "industry": pa.array([INDUSTRIES[i] for i in industries], pa.string()),
            "province": pa.array([PROVINCES[p][0] for p in provinces], pa.string()),
            "district": pa.array(districts, pa.string()),
            "status": pa.array([STATUSES[s] for s in status], pa.string()),
            "established": pa.array(established.astype("datetime64[D]"), pa.date32()),
        }
    )


def _tax(rng: np.random.Generator, registry: pa.Table) -> pa.Table:
    established_year = np.array([d.year for d in registry.column("established").to_pylist()])
    codes = registry.column("credit_code").to_numpy(zero_copy_only=False)
    years = np.array(_TAX_YEARS)
    eligible = established_year[:, None] <= years[None, :]
    enterprise_idx, year_idx = np.nonzero(eligible)
    n = len(enterprise_idx)
    risk = rng.beta(1.2, 6.0, size=len(codes))[enterprise_idx]  # a per-enterprise compliance risk
    arrears = np.minimum(12, rng.poisson(risk * 6)).astype(np.int64)
    penalties = np.minimum(20, rng.poisson(risk * 2)).astype(np.int64)
    rating_cut = np.digitize(risk + rng.normal(0, 0.05, size=n), [0.08, 0.2, 0.35, 0.55])
    tax_paid = np.clip(np.round(rng.lognormal(11.5, 1.8, size=n)), 0, 1_000_000_000).astype(np.int64)
    return pa.table(
        {
            "credit_code": pa.array(codes[enterprise_idx], pa.string()),
            "tax_year": pa.array(years[year_idx], pa.int64()),
            "tax_paid": pa.array(tax_paid, pa.int64()),
            "filed_on_time": pa.array(rng.random(n) > risk * 0.8, pa.bool_()),
            "arrears_months": pa.array(arrears, pa.int64()),
            "penalties": pa.array(penalties, pa.int64()),
            "credit_rating": pa.array([TAX_RATINGS[i] for i in rating_cut], pa.string()),
        }
    )


def _resident_ids(rng: np.random.Generator, n: int) -> list[str]:
    provinces = rng.choice(len(PROVINCES), size=n, p=_PROVINCE_WEIGHTS / _PROVINCE_WEIGHTS.sum())
    districts = _district_codes(rng, provinces)
    births = np.datetime64("1961-01-01") + rng.integers(0, 365 * 44, size=n).astype("timedelta64[D]")
    birth_text = np.datetime_as_string(births, unit="D")
    sequence = rng.integers(0, 1000, size=n)
    ids = []
    for district, birth, seq in zip(districts, birth_text, sequence, strict=True):
        first17 = f"{district}{birth.replace('-', '')}{seq:03d}"
        ids.append(first17 + resident_id_check_char(first17))
    return ids


def _social_insurance(
    rng: np.random.Generator, registry: pa.Table, n_persons: int, path: Path, progress: ProgressFn
) -> int:
    codes = registry.column("credit_code").to_numpy(zero_copy_only=False)
    provinces = registry.column("province").to_numpy(zero_copy_only=False)
    industries = registry.column("industry").to_numpy(zero_copy_only=False)
    active = np.nonzero(registry.column("status").to_numpy(zero_copy_only=False) == "active")[0]
    last_month = _LAST_MONTH.year * 12 + _LAST_MONTH.month - 1
    schema = pa.schema(
        [
            ("person_id", pa.string()),
            ("employer_code", pa.string()),
            ("region", pa.string()),
            ("industry", pa.string()),
            ("month", pa.date32()),
            ("wage_base", pa.int64()),
            ("paid", pa.bool_()),
        ]
    )
    expected_rows = n_persons * 20
    written = 0
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n_persons, _PERSON_CHUNK):
            count = min(_PERSON_CHUNK, n_persons - start)
            ids = np.array(_resident_ids(rng, count))
            months = rng.integers(1, 41, size=count)
            ends = last_month - rng.geometric(0.15, size=count) + 1
            employer = active[rng.integers(0, len(active), size=count)]
            wage = rng.lognormal(8.8, 0.45, size=count)
            reliability = rng.beta(12, 1, size=count)
            person = np.repeat(np.arange(count), months)
            offset = np.arange(len(person)) - np.repeat(np.cumsum(months) - months, months)
            month_index = ends[person] - offset
            month_dates = (month_index - 1970 * 12).astype("datetime64[M]").astype("datetime64[D]")
            growth = 1 + 0.004 * (month_index - month_index.min())
            wage_base = np.clip(np.round(wage[person] * growth * rng.normal(1, 0.02, size=len(person))), 2000, 35000)
            writer.write_table(
                pa.table(
                    {
                        "person_id": pa.array(ids[person], pa.string()),
                        "employer_code": pa.array(codes[employer[person]], pa.string()),
                        "region": pa.array(provinces[employer[person]], pa.string()),
                        "industry": pa.array(industries[employer[person]], pa.string()),
                        "month": pa.array(month_dates, pa.date32()),
                        "wage_base": pa.array(wage_base.astype(np.int64), pa.int64()),
                        "paid": pa.array(rng.random(len(person)) < reliability[person], pa.bool_()),
                    },
                    schema=schema,
                )
            )
            written += len(person)
            progress("social_insurance", written, max(expected_rows, written))
    return written
