"""What operators watch: Prometheus metrics, JSON-lines logs and optional tracing.

Below the leaves and above the domain, so that every layer may report to it; it imports nothing
else of the gateway but the domain's names. SECURITY: no label, log field or span attribute is
taken from a raw path, a query, a body, a key or a secret (docs/operations.md).
"""
