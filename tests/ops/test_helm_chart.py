"""deploy/helm/aimis: `helm lint` and `helm template`, and the rendered objects checked against the
SPEC: every deployable with its Deployment, Service, probes, resources, PDB and HPA; every topic with
replication 3 and min ISR 2; every principal's ACLs as SPEC 3 and 10 say; secrets only by reference."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts import principals, topics
from tests.ops.conftest import KUBE_VERSION
from tests.support.infra import ROOT

CHART = ROOT / "deploy" / "helm" / "aimis"
EXTERNAL = CHART / "ci" / "external-values.yaml"
EVERYTHING = CHART / "ci" / "strimzi-cluster-values.yaml"

DEPLOYABLES = {"order": 8001, "entitlement": 8002, "metering": 8003, "expiry": 8004, "console": 8000}
WITH_DATABASE = {"order", "entitlement", "metering", "expiry"}
DLQS = {"aimis.order.dlq.v1", "aimis.metering.dlq.v1", "aimis.entitlement.dlq.v1", "aimis.expiry.dlq.v1"}

# SPEC 3 (who produces and consumes what), 7.2 (each service's dead-letter topic) and 10 (platform
# writes only usage, analytics reads only the ledger): contracts/principals.py, the table the local
# secured broker enforces (tests/cluster/test_security.py), independent of values.yaml.
SPEC_ACLS: dict[str, dict[str, set[str]]] = {
    p.name: {"write": set(p.produces), "read": set(p.consumes),
             "group": {p.group + ("*" if p.group_prefix else "")} if p.group else set()}
    for p in principals.PRINCIPALS
}

SECRET_NAME = re.compile(r"SECRET|PASSWORD|CREDENTIAL|DATABASE_URL|TOKEN$", re.I)  # not AIMIS_TOKEN_MAX_TTL_S


# ---------------------------------------------------------------- rendering


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)


Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="module")
def render(helm: str) -> Render:
    cache: dict[tuple[str, ...], list[dict[str, Any]]] = {}

    def _render(*args: str) -> list[dict[str, Any]]:
        if args not in cache:
            r = run_helm(helm, "template", "billing", str(CHART), "--kube-version", KUBE_VERSION, *args)
            assert r.returncode == 0, r.stderr
            cache[args] = [d for d in yaml.safe_load_all(r.stdout) if d]
        return cache[args]

    return _render


def of_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def acl_table(user: dict[str, Any]) -> dict[str, set[str]]:
    """{"write": topics, "read": topics, "group": groups}; fails on any other rule."""
    out: dict[str, set[str]] = {"write": set(), "read": set(), "group": set()}
    for rule in user["spec"]["authorization"]["acls"]:
        res, ops = rule["resource"], set(rule["operations"])
        if res["type"] == "group":
            assert ops == {"Read"} and res["patternType"] in ("literal", "prefix"), rule
            out["group"].add(res["name"] + ("*" if res["patternType"] == "prefix" else ""))
            continue
        assert res["patternType"] == "literal", rule
        if res["type"] == "topic" and ops == {"Write", "Describe"}:
            out["write"].add(res["name"])
        elif res["type"] == "topic" and ops == {"Read", "Describe"}:
            out["read"].add(res["name"])
        else:
            raise AssertionError(f"unexpected ACL rule {rule}")
    return out


# ---------------------------------------------------------------- lint


@pytest.mark.parametrize("values", [None, EXTERNAL, EVERYTHING], ids=["default", "external", "everything"])
def test_helm_lint_is_clean(helm: str, values: Path | None) -> None:
    args = ["lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART)] + (["-f", str(values)] if values else [])
    r = run_helm(helm, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 chart(s) failed" in r.stdout


# ---------------------------------------------------------------- deployables


@pytest.mark.parametrize("values", [(), ("-f", str(EXTERNAL))], ids=["default", "external"])
def test_every_deployable_has_deployment_service_pdb_and_hpa(render: Render, values: tuple[str, ...]) -> None:
    objs = render(*values)
    deployments, services = of_kind(objs, "Deployment"), of_kind(objs, "Service")
    pdbs, hpas = of_kind(objs, "PodDisruptionBudget"), of_kind(objs, "HorizontalPodAutoscaler")
    names = {f"billing-aimis-{n}" for n in DEPLOYABLES}
    assert set(deployments) == set(services) == set(pdbs) == set(hpas) == names
    for name, port in DEPLOYABLES.items():
        full = f"billing-aimis-{name}"
        d = deployments[full]
        pod_labels = d["spec"]["template"]["metadata"]["labels"]
        selector = d["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items() and selector["app.kubernetes.io/component"] == name
        # no other deployable's pods match this selector
        assert sum(selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()
                   for o in deployments.values()) == 1
        c = container(d)
        assert c["command"] == ["python", "-m", f"services.{name}"]
        assert c["ports"] == [{"name": "http", "containerPort": port}]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
        res = c["resources"]
        assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True

        svc = services[full]
        assert svc["spec"]["selector"] == selector
        assert svc["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http"}]

        assert pdbs[full]["spec"]["selector"]["matchLabels"] == selector
        assert pdbs[full]["spec"]["minAvailable"] >= 1

        hpa = hpas[full]["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": full}
        assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
        assert "replicas" not in d["spec"]  # the HPA owns the replica count


def test_configuration_comes_from_one_configmap_with_each_port(render: Render) -> None:
    objs = render()
    cm = of_kind(objs, "ConfigMap")["billing-aimis-config"]["data"]
    for name, port in DEPLOYABLES.items():
        assert cm[f"AIMIS_{name.upper()}_PORT"] == str(port)
    assert cm["AIMIS_KAFKA_BOOTSTRAP"] == "aimis-kafka-kafka-bootstrap:9092"
    assert (cm["AIMIS_KAFKA_REPLICATION"], cm["AIMIS_KAFKA_MIN_ISR"]) == ("3", "2")
    assert cm["AIMIS_FULFILMENT_SLA_S"] == "3600" and cm["AIMIS_HOST"] == "0.0.0.0"
    for d in of_kind(objs, "Deployment").values():
        assert {"configMapRef": {"name": "billing-aimis-config"}} in container(d)["envFrom"]
        assert "checksum/config" in d["spec"]["template"]["metadata"]["annotations"]  # config change rolls pods


def test_configuration_values_reach_the_configmap(render: Render) -> None:
    objs = render("--set", "config.AIMIS_FULFILMENT_SLA_S=86400", "--set", "services.metering.port=9003")
    cm = of_kind(objs, "ConfigMap")["billing-aimis-config"]["data"]
    assert cm["AIMIS_FULFILMENT_SLA_S"] == "86400" and cm["AIMIS_METERING_PORT"] == "9003"
    console = env_of(container(of_kind(objs, "Deployment")["billing-aimis-console"]))
    assert console["AIMIS_METERING_URL"]["value"] == "http://billing-aimis-metering:9003"


def test_the_console_calls_the_services_and_holds_no_secret(render: Render) -> None:
    c = container(of_kind(render(), "Deployment")["billing-aimis-console"])
    env = env_of(c)
    assert {k: v["value"] for k, v in env.items() if k.endswith("_URL")} == {
        f"AIMIS_{n.upper()}_URL": f"http://billing-aimis-{n}:{p}" for n, p in DEPLOYABLES.items() if n != "console"
    }
    assert not [k for k, v in env.items() if "valueFrom" in v]


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize("values", [(), ("-f", str(EXTERNAL)), ("-f", str(EVERYTHING))],
                         ids=["default", "external", "everything"])
def test_no_secret_value_is_rendered_only_references(render: Render, values: tuple[str, ...]) -> None:
    objs = render(*values)
    assert not of_kind(objs, "Secret")
    for name, cm in of_kind(objs, "ConfigMap").items():
        for key, value in (cm.get("data") or {}).items():
            assert not SECRET_NAME.search(key), f"{name}: {key} looks secret"
            assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", str(value)), f"{name}: {key} carries credentials"
    for d in of_kind(objs, "Deployment").values():
        for e in container(d).get("env", []):
            if SECRET_NAME.search(e["name"]):
                assert "value" not in e and set(e["valueFrom"]) == {"secretKeyRef"}, e
    for job in of_kind(objs, "Job").values():
        (c,) = job["spec"]["template"]["spec"]["containers"]
        assert all("value" not in e for e in c["env"] if SECRET_NAME.search(e["name"]))


def test_values_yaml_holds_no_secret_value() -> None:
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        elif isinstance(node, str):
            leaf = path.rsplit(".", 1)[-1]
            assert not (re.search(r"password|secret|token$", leaf, re.I) and not re.search(r"Name|Key|Prefix|Var", leaf)
                        and node), f"{path} holds a value"
            assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", node), f"{path} carries credentials"

    walk(yaml.safe_load((CHART / "values.yaml").read_text()), "values")


def test_each_service_gets_its_own_kafka_principal_and_the_database_from_secrets(render: Render) -> None:
    deployments = of_kind(render(), "Deployment")
    for name in DEPLOYABLES:
        env = env_of(container(deployments[f"billing-aimis-{name}"]))
        if name in WITH_DATABASE:
            assert env["AIMIS_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "aimis-pg-app", "key": "uri"}
            assert env["AIMIS_KAFKA_USERNAME"]["value"] == f"aimis-{name}"
            assert env["AIMIS_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": f"aimis-{name}", "key": "password"}
            assert env["AIMIS_KAFKA_SECURITY"]["value"] == "scram"
            assert env["AIMIS_AUTH_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "aimis-secrets", "key": "auth-secret"}
        else:
            assert "AIMIS_DATABASE_URL" not in env and "AIMIS_KAFKA_PASSWORD" not in env
    order = env_of(container(deployments["billing-aimis-order"]))
    assert "AIMIS_PAYMENT_WEBHOOK_SECRET" in order
    assert not any("AIMIS_PAYMENT_WEBHOOK_SECRET" in env_of(container(d))
                   for n, d in deployments.items() if not n.endswith("-order"))


def test_external_kafka_and_postgresql(render: Render) -> None:
    objs = render("-f", str(EXTERNAL))
    for kind in ("KafkaTopic", "KafkaUser", "Kafka", "KafkaNodePool", "Cluster"):
        assert not of_kind(objs, kind), kind
    cm = of_kind(objs, "ConfigMap")["billing-aimis-config"]["data"]
    assert cm["AIMIS_KAFKA_BOOTSTRAP"].startswith("kafka-0.kafka.example.internal:9092,")
    env = env_of(container(of_kind(objs, "Deployment")["billing-aimis-metering"]))
    assert env["AIMIS_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "aimis-database", "key": "url"}
    assert env["AIMIS_KAFKA_USERNAME"]["value"] == "metering"
    assert env["AIMIS_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "aimis-kafka-metering", "key": "password"}


def test_external_kafka_without_a_bootstrap_is_refused(helm: str) -> None:
    r = run_helm(helm, "template", "billing", str(CHART), "--kube-version", KUBE_VERSION, "--set", "kafka.mode=external")
    assert r.returncode != 0 and "kafka.external.bootstrap is required" in r.stderr


def test_a_principal_naming_an_unknown_topic_is_refused(helm: str) -> None:
    r = run_helm(helm, "template", "billing", str(CHART), "--kube-version", KUBE_VERSION,
                 "--set", "kafka.principals.platform.produces={aimis.usage.v2}")
    assert r.returncode != 0 and "aimis.usage.v2, which is not in kafka.topics" in r.stderr


# ---------------------------------------------------------------- Kafka: topics and users


def test_every_topic_has_replication_3_and_min_isr_2(render: Render) -> None:
    kafka_topics = of_kind(render(), "KafkaTopic")
    assert {t["spec"]["topicName"] for t in kafka_topics.values()} == set(topics.ALL) | DLQS
    for t in kafka_topics.values():
        assert t["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == "aimis-kafka"
        assert t["spec"]["replicas"] == 3
        assert int(t["spec"]["config"]["min.insync.replicas"]) == 2
        assert t["spec"]["partitions"] == 6


def test_every_principal_has_exactly_the_acls_of_the_spec(render: Render) -> None:
    users = of_kind(render(), "KafkaUser")
    assert {u["metadata"]["labels"]["aimis.io/principal"] for u in users.values()} == set(SPEC_ACLS)
    for u in users.values():
        principal = u["metadata"]["labels"]["aimis.io/principal"]
        assert u["metadata"]["name"] == f"aimis-{principal}"
        assert u["metadata"]["labels"]["strimzi.io/cluster"] == "aimis-kafka"
        assert u["spec"]["authentication"] == {"type": "scram-sha-512"}
        assert u["spec"]["authorization"]["type"] == "simple"
        got = acl_table(u)
        want = SPEC_ACLS[principal]
        assert (got["write"], got["read"]) == (want["write"], want["read"]), principal
        assert got["group"] == want["group"], principal


def test_the_platform_cannot_touch_orders_and_analytics_reads_only_the_ledger(render: Render) -> None:
    users = {u["metadata"]["labels"]["aimis.io/principal"]: acl_table(u) for u in of_kind(render(), "KafkaUser").values()}
    assert users["platform"]["write"] == {topics.USAGE} and not users["platform"]["read"]
    assert users["analytics"]["read"] == {topics.LEDGER} and not users["analytics"]["write"]
    writers = {t: {p for p, a in users.items() if t in a["write"]} for t in set(topics.ALL) | DLQS}
    assert writers[topics.ORDERS] == {"order"} and writers[topics.LEDGER] == {"entitlement"}
    # one producer per topic, but usage: the platform, and metering's HTTP ingestion (SPEC 5.0)
    assert writers.pop(topics.USAGE) == {"platform", "metering"}
    assert all(len(w) == 1 for w in writers.values()), writers


def test_the_optional_kafka_cluster_is_kraft_with_scram_and_acls(render: Render) -> None:
    objs = render("-f", str(EVERYTHING))
    (kafka,) = of_kind(objs, "Kafka").values()
    (pool,) = of_kind(objs, "KafkaNodePool").values()
    assert kafka["metadata"]["name"] == "aimis-kafka"
    assert kafka["metadata"]["annotations"] == {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"}
    spec = kafka["spec"]["kafka"]
    assert spec["authorization"] == {"type": "simple"}
    assert [listener["authentication"] for listener in spec["listeners"]] == [{"type": "scram-sha-512"}]
    assert spec["config"]["min.insync.replicas"] == 2 and spec["config"]["default.replication.factor"] == 3
    assert spec["config"]["auto.create.topics.enable"] is False
    assert set(kafka["spec"]["entityOperator"]) == {"topicOperator", "userOperator"}
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == "aimis-kafka"
    assert pool["spec"]["replicas"] == 3 and set(pool["spec"]["roles"]) == {"controller", "broker"}


def test_security_off_renders_topics_but_no_users_or_credentials(render: Render) -> None:
    objs = render("--set", "kafka.security=none")
    assert of_kind(objs, "KafkaTopic") and not of_kind(objs, "KafkaUser")
    for d in of_kind(objs, "Deployment").values():
        assert not {"AIMIS_KAFKA_USERNAME", "AIMIS_KAFKA_PASSWORD"} & set(env_of(container(d)))


# ---------------------------------------------------------------- PostgreSQL and migrations


def test_cloudnativepg_cluster_and_its_application_secret(render: Render) -> None:
    (cluster,) = of_kind(render(), "Cluster").values()
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["metadata"]["name"] == "aimis-pg"
    spec = cluster["spec"]
    assert spec["instances"] == 3 and spec["storage"]["size"]
    assert spec["bootstrap"]["initdb"] == {"database": "aimis", "owner": "aimis"}
    # checkpoints by time and the autovacuum launcher every 5 s, as deploy/local/postgres.sh runs
    # them (docs/decisions.md)
    assert spec["postgresql"]["parameters"] == {"max_wal_size": "4GB", "checkpoint_timeout": "15min",
                                                "autovacuum_naptime": "5s"}


def test_the_migration_job_runs_every_database_service_before_upgrades(render: Render) -> None:
    objs = render()
    job = of_kind(objs, "Job")["billing-aimis-migrate"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["command"][:2] == ["python", "/migrate/migrate.py"] and set(c["command"][2:]) == WITH_DATABASE
    script = of_kind(objs, "ConfigMap")["billing-aimis-migrate"]
    assert script["data"]["migrate.py"] == (CHART / "files" / "migrate.py").read_text()
    assert int(script["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])


# ---------------------------------------------------------------- monitoring


def test_monitoring_objects_carry_the_rules_and_the_dashboard(render: Render) -> None:
    objs = render("-f", str(EVERYTHING))
    assert set(of_kind(objs, "ServiceMonitor")) == {f"billing-aimis-{n}" for n in DEPLOYABLES}
    (rule,) = of_kind(objs, "PrometheusRule").values()
    assert rule["spec"] == yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    dash = of_kind(objs, "ConfigMap")["billing-aimis-dashboard"]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dash["data"]["aimis.json"]) == json.loads((ROOT / "deploy" / "grafana" / "aimis.json").read_text())
    for d in of_kind(objs, "Deployment").values():
        ann = d["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
        assert ann["prometheus.io/port"] == str(container(d)["ports"][0]["containerPort"])


@pytest.mark.parametrize(("setting", "complaint"), [
    ("kafka.mode=strimzy", "value must be one of 'strimzi', 'external'"),
    ("config.AIMIS_AUTH_SECRET=hunter2", "invalid propertyName 'AIMIS_AUTH_SECRET'"),
    ("secretEnv.AIMIS_AUTH_SECRET.value=hunter2", "additional properties 'value' not allowed"),
    ("services.billing.port=1", "invalid propertyName 'billing'"),
])
def test_values_schema_refuses_typos_and_inline_secrets(helm: str, setting: str, complaint: str) -> None:
    r = run_helm(helm, "template", "billing", str(CHART), "--kube-version", KUBE_VERSION, "--set", setting)
    assert r.returncode != 0 and complaint in r.stderr, r.stderr
