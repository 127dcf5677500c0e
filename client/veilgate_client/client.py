"""`Gateway`: one authenticated connection to a Veilgate gateway, for researchers and businesses.

Tokens are fetched with the client credentials and renewed a minute before they expire. Only
DP releases are retried (with one `Idempotency-Key` for every attempt, so the gateway charges
once); nothing else is, since a verification or a score counts against limits. Every result
that carries a receipt is checked against the pinned keys before it is returned.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from veilgate_client import jobs, results
from veilgate_client.config import load_config
from veilgate_client.errors import (
    BadResponse,
    Conflict,
    ReceiptInvalid,
    Unavailable,
    Unreachable,
    problem_from_response,
)
from veilgate_client.evidence import KeyPin, sha256_digest
from veilgate_client.receipt import Receipt

_RENEW_SECONDS = 60.0
_RETRYABLE = (httpx.TransportError,)
DEFAULT_PIN_DIR = Path("~/.cache/veilgate/keys")
MAX_RESPONSE_BYTES = 8 * 1_048_576
"""The most of an answer, decoded, that the client reads (the gateway's largest are far smaller)."""
_DECODED_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


class Gateway:
    """A client of one gateway, as one client account.

    `purpose`: the default purpose of requests (each call may give its own). `pin_file`: where
    the gateway's keys are pinned (default: under ~/.cache/veilgate/keys, one file per URL;
    `False` keeps them in memory). `max_retries`: attempts after the first, for releases only.
    `url` is https://, or http:// to this machine; `allow_http=True` allows http:// elsewhere.
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        secret: str,
        *,
        purpose: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        pin_file: str | Path | bool | None = None,
        transport: httpx.BaseTransport | None = None,
        allow_http: bool = False,
    ) -> None:
        scheme, host = httpx.URL(url).scheme, httpx.URL(url).host
        if scheme != "https" and not (scheme == "http" and (allow_http or host in _LOOPBACK)):
            # SECURITY: the client secret and every token would cross the network in clear text.
            raise ValueError("url: https://, or http:// to this machine only (allow_http=True for a trusted network)")
        self.url = url.rstrip("/")
        self.client_id = client_id
        self.purpose = purpose
        self.max_retries = max_retries
        self._secret = secret
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)
        self._token: str | None = None
        self._expires = 0.0
        if pin_file is None or pin_file is True:
            name = hashlib.sha256(self.url.encode()).hexdigest()[:24] + ".json"
            path: Path | None = DEFAULT_PIN_DIR.expanduser() / name
        else:
            path = None if pin_file is False else Path(pin_file)
        self.keys = KeyPin(lambda: self.get_json("/.well-known/jwks.json", auth=False), path)

    @classmethod
    def from_env(cls, config: str | Path | None = None, *, profile: str | None = None, **options: Any) -> Gateway:
        """From `VEILGATE_URL`, `VEILGATE_CLIENT_ID`, `VEILGATE_CLIENT_SECRET` and the config file."""
        found = load_config(config, profile)
        options.setdefault("purpose", found.purpose)
        return cls(found.url, found.client_id, found.secret, **options)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------------

    def token(self) -> str:
        """A valid access token, fetched again a minute before the current one expires."""
        if self._token is None or time.monotonic() > self._expires - _RENEW_SECONDS:
            form = {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self._secret}
            try:
                response = self._fetch("POST", "/v1/token", data=form)
            except _RETRYABLE as lost:
                raise Unreachable(f"POST /v1/token: {type(lost).__name__}: {lost}") from lost
            if response.status_code != 200:
                raise problem_from_response(response)
            body = json_object(response)
            token, lifetime = body.get("access_token"), body.get("expires_in", 900)
            if not isinstance(token, str) or not isinstance(lifetime, int | float) or isinstance(lifetime, bool):
                raise BadResponse("the token endpoint's answer has no access_token and expires_in")
            self._token = token
            self._expires = time.monotonic() + float(lifetime)
        return self._token

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        auth: bool = True,
        release: bool = False,
    ) -> httpx.Response:
        """Send one request; raise the problem as a typed exception. `release=True` retries
        transport failures, 503s and a 409 for a key still running, under one Idempotency-Key."""
        headers = {"Idempotency-Key": uuid.uuid4().hex} if release else {}
        attempts = 1 + (self.max_retries if release else 0)
        for attempt in range(attempts):
            if auth:
                headers["Authorization"] = f"Bearer {self.token()}"
            last = attempt == attempts - 1
            try:
                response = self._fetch(method, path, json=json, params=params, headers=headers)
            except _RETRYABLE as lost:
                if last:
                    raise Unreachable(f"{method} {path}: {type(lost).__name__}: {lost}") from lost
            else:
                if response.status_code < 400:
                    return response
                error = problem_from_response(response)
                running = type(error) is Conflict and "still running" in error.detail
                retryable = running or isinstance(error, Unavailable)
                if last or not retryable:
                    raise error
            time.sleep(min(0.25 * 2**attempt, 4.0))
        raise AssertionError("unreachable")

    def _fetch(self, method: str, path: str, **options: Any) -> httpx.Response:
        """One exchange, its answer read whole but never past MAX_RESPONSE_BYTES once decoded: a
        hostile server's 400 KB of gzip would otherwise inflate to gigabytes in this process."""
        request = self._http.build_request(method, path, **options)
        streamed = self._http.send(request, stream=True)
        body = bytearray()
        try:
            for chunk in streamed.iter_bytes():
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise BadResponse(f"{method} {path}: the answer is over {MAX_RESPONSE_BYTES >> 20} MiB")
        finally:
            streamed.close()
        kept = [(k, v) for k, v in streamed.headers.multi_items() if k.lower() not in _DECODED_HEADERS]
        return httpx.Response(streamed.status_code, headers=kept, content=bytes(body), request=request)

    def get_json(self, path: str, *, params: Mapping[str, Any] | None = None, auth: bool = True) -> Any:
        """A GET's JSON answer (`BadResponse` if it is not JSON)."""
        response = self.request("GET", path, params=params, auth=auth)
        try:
            return response.json()
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
            raise BadResponse(f"GET {path}: the answer is not JSON") from None

    def jwks(self, kid: str | None = None) -> dict[str, Any]:
        """The gateway's pinned receipt keys (fetched on first use, refreshed by rotation rules)."""
        return self.keys.keys(kid)

    def receipt_of(self, body: dict[str, Any]) -> Receipt:
        """Check a result body's receipt: signed by a pinned key, for this client, exactly this body."""
        return Receipt.from_body(body, self, consumer=self.client_id)

    def _signed(
        self,
        response: httpx.Response,
        service: str,
        entries: tuple[str, int] | None = None,
        *,
        sent: Sequence[Mapping[str, Any]] = (),
    ) -> tuple[dict[str, Any], Receipt]:
        """The signed result of a response, after its receipt checked: nothing unchecked is used. The
        receipt must be for the `service` called, with `entries` hold that many answers, and with
        `sent` name the digest of one of those forms of the body sent: a genuine receipt of another
        call (another subject's, with the same number of answers), passed off as this one's, is
        refused."""
        receipt = self.receipt_of(json_object(response))
        if receipt.document["service"] != service:
            raise ReceiptInvalid(f"the receipt is for {receipt.document['service']}, not for {service}")
        if not isinstance(receipt.result, dict):
            raise BadResponse("the signed result is not an object")
        if entries is not None:
            listed = receipt.result.get(entries[0])
            if not isinstance(listed, list) or len(listed) != entries[1]:
                raise ReceiptInvalid(f"the receipt holds another number of {entries[0]} than were asked for")
        if sent and receipt.document["request_digest"] not in {sha256_digest(form) for form in sent}:
            raise ReceiptInvalid("the receipt is for another request than the one sent")
        return receipt.result, receipt

    def _purpose(self, purpose: str | None) -> str:
        chosen = purpose or self.purpose
        if not chosen:
            raise ValueError("give purpose= here or to Gateway(...)")
        return chosen

    # -- everyone --------------------------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        """Who the token says this client is: id, organisation, roles."""
        found: dict[str, Any] = self.get_json("/v1/me")
        return found

    def models(self) -> list[dict[str, Any]]:
        """The approved models with their public cards and version hashes."""
        return list(self.get_json("/v1/models", auth=False)["models"])

    def catalog(self, dataset: str | None = None) -> Any:
        """The public data resource directory, or one dataset's entry."""
        return self.get_json("/v1/catalog" + (f"/{dataset}" if dataset else ""), auth=False)

    # -- researchers -----------------------------------------------------------------------------

    def templates(self) -> list[dict[str, Any]]:
        """The aggregate templates this client's grants cover, with their public definitions."""
        return list(self.get_json("/v1/aggregate")["templates"])

    def preview(self, template: str, *, purpose: str | None = None, **query: Any) -> results.Preview:
        """Cost and expected accuracy of one query; spends nothing. Query as for `release`."""
        body = {"purpose": self._purpose(purpose), **query_body(**query)}
        return results.Preview(json_object(self.request("POST", f"/v1/aggregate/{template}/preview", json=body)))

    def release(self, template: str, *, purpose: str | None = None, **query: Any) -> results.Release:
        """Release one DP query: `group_by`, `filters`, `epsilon`, `max_interval_width`. Charged once."""
        body = {"purpose": self._purpose(purpose), **query_body(**query)}
        result, receipt = self._signed(
            self.request("POST", f"/v1/aggregate/{template}", json=body, release=True), template
        )
        return results.Release(result, receipt)

    def preview_batch(self, queries: Sequence[Mapping[str, Any]], *, purpose: str | None = None) -> results.Preview:
        """The total cost of a batch and each query's accuracy; each query is `{"template", ...}`."""
        body = {"purpose": self._purpose(purpose), "queries": [batch_query(q) for q in queries]}
        return results.Preview(json_object(self.request("POST", "/v1/aggregate-batch/preview", json=body)))

    def release_batch(self, queries: Sequence[Mapping[str, Any]], *, purpose: str | None = None) -> results.Batch:
        """Release a batch: all charged at once or none. One `Release` per query, one receipt."""
        body = {"purpose": self._purpose(purpose), "queries": [batch_query(q) for q in queries]}
        response = self.request("POST", "/v1/aggregate-batch", json=body, release=True)
        service = str(queries[0]["template"]) if len(queries) == 1 else "aggregate-batch"
        result, receipt = self._signed(response, service, ("releases", len(queries)))
        releases = result["releases"]
        if not all(isinstance(r, dict) for r in releases):
            raise BadResponse("the signed batch result has no list of releases")
        return results.Batch([results.Release(r, receipt) for r in releases], receipt)

    def budget(self) -> results.Budget:
        """Granted, spent, reserved and remaining privacy budget, per grant, dataset and level."""
        return results.Budget(self.get_json("/v1/budget"))

    def fit(self, model: str, *, purpose: str | None = None, epsilon: str | float | None = None) -> results.Fit:
        """Fit an approved model under DP (charged once; the same fit again is replayed free)."""
        body: dict[str, Any] = {"purpose": self._purpose(purpose)}
        if epsilon is not None:
            body["epsilon"] = str(Decimal(str(epsilon)))
        result, receipt = self._signed(self.request("POST", f"/v1/models/{model}/fit", json=body), model)
        return results.Fit(result, receipt)

    def submit(
        self,
        service: str,
        code: str | Path,
        *,
        datasets: Sequence[str],
        outputs: Sequence[str] = (),
        tables: Sequence[Mapping[str, Any]] | str | Path | None = None,
        purpose: str | None = None,
        epsilon: str | float | None = None,
    ) -> jobs.Job:
        """Submit analysis code (a Python file's path or its text) for review and a sandboxed run.
        `outputs`: the DP outputs it declares; `tables`: an SDC service's declared tables (a list,
        or the path of a JSON file holding it)."""
        text = Path(code).read_text(encoding="utf-8") if isinstance(code, Path) else code
        body: dict[str, Any] = {"service": service, "purpose": self._purpose(purpose), "code": text,
                                "datasets": list(datasets)}  # fmt: skip
        if outputs:
            body["outputs"] = list(outputs)
        if isinstance(tables, str | Path):
            body["tables"] = json.loads(Path(tables).read_text(encoding="utf-8"))
        elif tables is not None:
            body["tables"] = [dict(t) for t in tables]
        if epsilon is not None:
            body["epsilon"] = str(Decimal(str(epsilon)))
        return jobs.Job(self, json_object(self.request("POST", "/v1/jobs", json=body)))

    def job(self, job_id: str) -> jobs.Job:
        """A submitted job, as it is now."""
        return jobs.Job(self, self.get_json(f"/v1/jobs/{job_id}"))

    def wait(
        self,
        job: jobs.Job | str,
        *,
        timeout: float = 600.0,
        poll: float = 1.0,
        progress: Callable[[jobs.Job], None] | bool = True,
    ) -> jobs.Job:
        """Follow a job until it finished, failed or was rejected; `progress` sees each new status."""
        return jobs.wait(self, job if isinstance(job, str) else job.id, timeout=timeout, poll=poll, progress=progress)

    @staticmethod
    def run_local(
        code: str | Path,
        *,
        service: str,
        datasets: Sequence[str],
        outputs: Sequence[str] = (),
        tables: str | Path | None = None,
        config: str | Path | None = None,
        rows: int = 1000,
    ) -> jobs.LocalRun:
        """Run a job on the synthetic sample of its datasets with the gateway's output checks,
        through the `veilgate jobs run-local` command of a local installation."""
        beside = Path(sys.executable).parent / "veilgate"
        command = str(beside) if beside.is_file() else shutil.which("veilgate")
        if command is None:
            raise RuntimeError("run_local needs the veilgate command of a local installation (pip install veilgate)")
        return jobs.run_local(code, service=service, datasets=datasets, outputs=outputs, tables=tables, config=config,
                              rows=rows, run=subprocess.run, veilgate=command)  # fmt: skip

    # -- businesses ------------------------------------------------------------------------------

    def verify(
        self, service: str, claims: Sequence[Mapping[str, Any]] | Mapping[str, Any], *, purpose: str | None = None
    ) -> results.Answers:
        """Check claims (`{"keys": {...}, "checks": {...}}`, one or a batch): match or not, per field."""
        batch = [dict(c) for c in ([claims] if isinstance(claims, Mapping) else claims)]
        body = {"purpose": self._purpose(purpose), "claims": batch}
        response = self.request("POST", f"/v1/verify/{service}", json=body)
        # Gateways before 2026-12 hashed each claim with its `consent_ref` filled in (null).
        filled = {**body, "claims": [{"consent_ref": None, **c} for c in batch]}
        result, receipt = self._signed(response, service, ("answers", len(batch)), sent=(body, filled))
        return results.Answers(result, receipt, results.RateLimitState.parse(response))

    def score(self, model: str, keys: Sequence[str] | str, *, purpose: str | None = None) -> results.Answers:
        """Score entities with an approved model: a grade and/or score per key, computed in the domain."""
        body = {"purpose": self._purpose(purpose), "keys": [keys] if isinstance(keys, str) else list(keys)}
        response = self.request("POST", f"/v1/models/{model}/score", json=body)
        result, receipt = self._signed(response, model, ("answers", len(body["keys"])), sent=(body,))
        return results.Answers(result, receipt, results.RateLimitState.parse(response))


def json_object(response: httpx.Response) -> dict[str, Any]:
    """A response's JSON object; `BadResponse` for anything else (an HTML page, a truncated body)."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise BadResponse(f"{response.request.method} {response.request.url.path}: the answer is not a JSON object")
    return body


def query_body(
    *,
    group_by: Sequence[str] | None = None,
    filters: Mapping[str, Any] | None = None,
    epsilon: str | float | Decimal | None = None,
    max_interval_width: float | None = None,
) -> dict[str, Any]:
    """The JSON of one aggregate query; epsilon goes as a decimal string, never a float's digits."""
    body: dict[str, Any] = {"parameters": {"group_by": list(group_by or []), "filters": dict(filters or {})}}
    if epsilon is not None:
        body["epsilon"] = str(Decimal(str(epsilon)))
    if max_interval_width is not None:
        body["max_interval_width"] = max_interval_width
    return body


def batch_query(query: Mapping[str, Any]) -> dict[str, Any]:
    options = {k: v for k, v in query.items() if k != "template"}
    return {"template": query["template"], **query_body(**options)}
