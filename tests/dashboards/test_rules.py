"""The Prometheus rules: promtool accepts them, their unit tests pass, every alert is documented."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.dashboards.promql import RULES, RULES_TEST, load_rules, run_promtool

SEVERITIES = {"critical", "warning"}
# Alerts about something that has already happened fire at once.
NO_FOR = {"RollgateRolloutRolledBack"}
REQUIRED_ALERTS = {
    "RollgateRolloutRolledBack",
    "RollgateRolloutStuck",
    "RollgateRolloutPausedTooLong",
    "RollgateShadowCopiesDropped",
    "RollgateCandidateErrorBudgetBurnFast",
    "RollgateCandidateErrorBudgetBurnSlow",
    "RollgateGatewayDown",
}


def alerts() -> list[dict]:
    return [r for g in load_rules()["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_accepts_the_rules() -> None:
    result = run_promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alerts_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", RULES_TEST)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_reports_each_firing_case_when_told_to_expect_silence(tmp_path: Path) -> None:
    """A control: the unit tests mean something only if promtool compares the expectations."""
    tests = yaml.safe_load(RULES_TEST.read_text())
    tests["rule_files"] = [str(RULES)]
    firing = 0
    for test in tests["tests"]:
        for case in test["alert_rule_test"]:
            firing += bool(case["exp_alerts"])
            case["exp_alerts"] = []
    inverted = tmp_path / "inverted_test.yml"
    inverted.write_text(yaml.safe_dump(tests))
    result = run_promtool("test", "rules", inverted)
    assert result.returncode != 0
    assert (result.stdout + result.stderr).count("alertname:") == firing > 0


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() -> None:
    fired, quiet = set(), set()
    for test in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names >= REQUIRED_ALERTS
    assert fired == names
    assert quiet == names


def test_every_alert_has_a_severity_summary_description_and_a_for() -> None:
    for alert in alerts():
        name = alert["alert"]
        assert alert.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = alert.get("annotations", {})
        assert annotations.get("summary", "").strip(), name
        assert annotations.get("description", "").strip(), name
        assert ("for" in alert) == (name not in NO_FOR), name


def test_the_burn_rate_alerts_state_their_slo() -> None:
    burns = [a for a in alerts() if "ErrorBudget" in a["alert"]]
    assert len(burns) == 2
    for alert in burns:
        assert "99%" in alert["annotations"]["slo"]
        assert 'role="candidate"' in alert["expr"]


def test_the_file_is_a_plain_rules_file() -> None:
    """A PrometheusRule is generated from it: `groups` only, no Kubernetes wrapper."""
    rules = load_rules()
    assert set(rules) == {"groups"}
    names = [g["name"] for g in rules["groups"]]
    assert len(names) == len(set(names))
