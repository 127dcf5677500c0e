"""deploy/: the Dockerfile, the compose file and the Helm chart, parsed and checked against the
gateway's Settings (no container engine runs here; deploy/local-topology runs the topology)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "veilgate"
_PLACEHOLDER = re.compile(r"\{\{\s*\.(Values|Release|Chart)\.([A-Za-z0-9_.]+)\s*\}\}")


def setting_of(env_name: str) -> str:
    assert env_name.startswith("VEILGATE_"), env_name
    return env_name.removeprefix("VEILGATE_").lower()


def assert_settings_exist(env_names: list[str]) -> None:
    unknown = [n for n in env_names if n.startswith("VEILGATE_") and setting_of(n) not in Settings.model_fields]
    assert unknown == [], f"not fields of gateway Settings: {unknown}"


def render(template: str, values: dict[str, Any]) -> str:
    """The chart's templates use plain placeholders only (no conditionals); anything else fails."""
    context = {"Values": values, "Release": {"Name": "vg"}, "Chart": {"Name": "veilgate"}}

    def lookup(match: re.Match[str]) -> str:
        node: Any = context[match.group(1)]
        for part in match.group(2).split("."):
            node = node[part]
        return str(node)

    rendered = _PLACEHOLDER.sub(lookup, template)
    assert "{{" not in rendered, "a template construct the test does not render"
    return rendered


def chart() -> dict[str, dict[str, Any]]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documents: dict[str, dict[str, Any]] = {}
    for path in sorted((CHART / "templates").glob("*.yaml")):
        for doc in yaml.safe_load_all(render(path.read_text(), values)):
            if doc:
                documents[doc["kind"]] = doc
    return documents


def test_dockerfile_runs_unprivileged_with_state_and_data_as_volumes() -> None:
    lines = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    env: dict[str, str] = {}
    for line in lines:
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    assert_settings_exist(list(env))
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    volumes = next(line for line in lines if line.startswith("VOLUME "))
    assert env["VEILGATE_STATE_DIR"] in volumes
    assert env["VEILGATE_DATA_DIR"] in volumes
    for line in lines:
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source


def test_compose_runs_two_read_only_replicas_behind_a_proxy_on_postgres() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "gateway-1", "gateway-2", "proxy"} <= set(services)
    for name in ("gateway-1", "gateway-2"):
        gateway = services[name]
        assert gateway["read_only"] is True
        assert "/tmp" in gateway["tmpfs"]
        assert gateway["user"].split(":")[0] not in ("root", "0")
        assert gateway["cap_drop"] == ["ALL"]
        assert "ports" not in gateway, "replicas are reached through the proxy only"
        assert_settings_exist(list(gateway["environment"]))
        assert gateway["environment"]["VEILGATE_DATABASE_DSN"].startswith("postgresql://")
        assert "@postgres:5432/" in gateway["environment"]["VEILGATE_DATABASE_DSN"]
        mounts = {m.split(":")[1] for m in gateway["volumes"]}
        env = gateway["environment"]
        assert {env["VEILGATE_STATE_DIR"], env["VEILGATE_DATA_DIR"], env["VEILGATE_POLICY_DIR"]} <= mounts
    assert compose["networks"]["backend"]["internal"] is True
    proxy = services["proxy"]
    template_mount = next(m for m in proxy["volumes"] if "veilgate.conf.template" in m)
    template = (DEPLOY / template_mount.split(":")[0]).read_text()
    assert set(re.findall(r"\$\{(\w+)\}", template)) == set(proxy["environment"])
    upstreams = {proxy["environment"]["VEILGATE_UPSTREAM_1"], proxy["environment"]["VEILGATE_UPSTREAM_2"]}
    assert upstreams == {"gateway-1:8000", "gateway-2:8000"}


def test_the_proxy_keeps_no_access_log_and_sets_the_callers_address() -> None:
    template = (DEPLOY / "nginx" / "veilgate.conf.template").read_text()
    directives = [line.strip() for line in template.splitlines() if not line.strip().startswith("#")]
    assert "access_log off;" in directives
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in directives
    assert not any("proxy_add_x_forwarded_for" in d or "non_idempotent" in d for d in directives)


def test_helm_chart_renders_to_a_locked_down_deployment() -> None:
    docs = chart()
    assert set(docs) == {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert_settings_exist([f"VEILGATE_{name}" for name in values["settings"]])
    pod = docs["Deployment"]["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert docs["Deployment"]["spec"]["replicas"] >= 2
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e for e in container["env"]}
    assert_settings_exist(list(env))
    assert "value" not in env["VEILGATE_DATABASE_DSN"], "the DSN comes from a Secret"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    state = env["VEILGATE_STATE_DIR"]["value"]
    for path in (f"{state}/keys/token", f"{state}/keys/receipt", f"{state}/audit"):
        assert "secret" in volumes[mounts[path]], f"{path} is not from a Secret"
    assert {state, env["VEILGATE_DATA_DIR"]["value"], "/tmp"} <= set(mounts)
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        spec = docs[kind]["spec"]
        selector = spec.get("selector") or spec["podSelector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), kind
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] >= 1
    policy = docs["NetworkPolicy"]["spec"]
    assert "Egress" in policy["policyTypes"]
    allowed_ports = {(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]}
    assert allowed_ports == {("TCP", values["database"]["port"]), ("UDP", 53), ("TCP", 53)}


def test_a_setting_that_does_not_exist_is_caught() -> None:
    with pytest.raises(AssertionError, match="VEILGATE_NO_SUCH_SETTING"):
        assert_settings_exist(["VEILGATE_STATE_DIR", "VEILGATE_NO_SUCH_SETTING"])
