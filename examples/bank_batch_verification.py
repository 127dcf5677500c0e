"""A bank's nightly batch: verify loan applicants' claims, keep every receipt as evidence.

    python examples/bank_batch_verification.py applicants.csv --out evidence/

`applicants.csv` has the columns credit_code, legal_representative. Credentials come from
VEILGATE_URL, VEILGATE_CLIENT_ID and VEILGATE_CLIENT_SECRET (or the client config file). Each
batch's receipt is checked against the gateway's pinned keys, proved to be in the audit log when
a checkpoint covers it, and saved; `results.csv` gets one line per applicant.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from veilgate_client import Gateway, NotYetCheckpointed, RateLimited

BATCH = 50


def run(gateway: Gateway, applicants: list[dict[str, str]], out: Path, *, wait: float = 0.0) -> list[dict[str, str]]:
    """Verify in batches; returns the per-applicant lines written to results.csv."""
    out.mkdir(parents=True, exist_ok=True)
    lines: list[dict[str, str]] = []
    for start in range(0, len(applicants), BATCH):
        chunk = applicants[start : start + BATCH]
        claims = [
            {"keys": {"credit_code": a["credit_code"]},
             "checks": {"legal_representative": a["legal_representative"], "active": True}}
            for a in chunk
        ]  # fmt: skip
        try:
            answers = gateway.verify("enterprise-registration", claims, purpose="credit_assessment")
        except RateLimited as limited:
            print(f"rate limited; retry after {limited.retry_after} s")
            break
        receipt_file = out / f"receipt-{answers.receipt.request_id}.json"
        try:
            answers.receipt.prove_inclusion(wait=wait)
        except NotYetCheckpointed:
            print("not checkpointed yet: the receipt is saved without its inclusion proof")
        answers.receipt.save(receipt_file)
        for applicant, answer in zip(chunk, answers, strict=True):
            line = {"credit_code": applicant["credit_code"], "result": answer["result"]}
            lines.append(line | {"transaction_id": answer.get("transaction_id", ""), "receipt": receipt_file.name})
        print(f"{len(chunk)} claims; {answers.rate_limit.remaining('consumer')} requests left this minute")
    with (out / "results.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["credit_code", "result", "transaction_id", "receipt"])
        writer.writeheader()
        writer.writerows(lines)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("applicants", type=Path)
    parser.add_argument("--out", type=Path, default=Path("evidence"))
    args = parser.parse_args()
    with args.applicants.open(encoding="utf-8") as handle:
        applicants = list(csv.DictReader(handle))
    with Gateway.from_env() as gateway:
        run(gateway, applicants, args.out, wait=90)


if __name__ == "__main__":
    main()
