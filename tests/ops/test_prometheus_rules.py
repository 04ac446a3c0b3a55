"""deploy/prometheus/alerts.yml: `promtool check rules` and `promtool test rules` pass, and every
alert has a unit test that fires it (deploy/prometheus/alerts_test.yml)."""

from __future__ import annotations

import subprocess

import yaml

from tests.support.infra import ROOT

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
# SPEC 10: lag, stall, parked outbox, dead letters, 5xx, a paid order not fulfilled in time.
REQUIRED = {"AimisConsumerLagHigh", "AimisConsumerStalled", "AimisOutboxRowsParked", "AimisDeadLetters",
            "AimisHttp5xxRate", "AimisPaidOrdersNotFulfilled"}


def alerts() -> dict[str, dict]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_promtool_check_rules(promtool: str) -> None:
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in r.stdout


def test_promtool_test_rules(promtool: str) -> None:
    r = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_the_spec_alerts_exist_with_severity_and_runbook_text() -> None:
    found = alerts()
    assert REQUIRED <= set(found)
    for name, rule in found.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    fired: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            if check.get("exp_alerts"):
                fired.add(check["alertname"])
    assert fired == set(alerts())
