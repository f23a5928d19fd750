"""What the dashboard and the rules query: their PromQL, the metric names in it, and promtool.

Grafana variables are replaced by concrete values so that Prometheus' own parser
(`promtool check rules`) can judge each query; metric names are read off the
PromQL with a small scanner, enough for the expressions these files use.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "grafana" / "rollgate.json"
RULES = ROOT / "dashboards" / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "dashboards" / "prometheus" / "rules_test.yml"

# Concrete values for Grafana's variables: any value of the right kind parses the same.
GRAFANA_VALUES = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "route": "support",
    "datasource": "prometheus",
}
# Prometheus' own series: `up` comes from scraping, ALERTS from the rule manager.
BUILT_IN = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*(\w+)\s*\)\s*$")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])[A-Za-z_:][\w:]*")
_SELECTOR = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
    | {"offset", "bool", "inf", "nan", "atan2"}
)


@dataclass(frozen=True, slots=True)
class Query:
    where: str  # for people: which panel, annotation or rule
    expr: str  # PromQL, Grafana variables still in it


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def load_rules() -> dict:
    return yaml.safe_load(RULES.read_text())


def panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows included."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_queries(dashboard: dict) -> list[Query]:
    """Panels' targets and annotations' queries (template variables: `variable_metrics`)."""
    queries = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            queries.append(Query(f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for annotation in dashboard["annotations"]["list"]:
        expr = annotation.get("target", {}).get("expr") or annotation.get("expr")
        if expr:
            queries.append(Query(f"annotation {annotation['name']!r}", expr))
    return queries


def variable_metrics(dashboard: dict) -> dict[str, str]:
    """Each query variable's metric, from its `label_values(metric, label)` (Grafana syntax)."""
    metrics = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text)
        assert match, f"variable {variable['name']}: not label_values(metric, label): {text}"
        metrics[variable["name"]] = match.group(1)
    return metrics


def rule_queries(rules: dict) -> list[Query]:
    return [
        Query(f"rule {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def recorded_names(rules: dict) -> set[str]:
    return {
        rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule
    }


def as_promql(expr: str) -> str:
    """`expr` with Grafana's variables replaced; KeyError for a variable this file does not know."""
    return _VARIABLE.sub(lambda m: GRAFANA_VALUES[m.group(1) or m.group(2)], expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords and labels left out)."""
    text = _STRING.sub('""', as_promql(expr))
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        if name.lower() in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(name)
    return names


def matcher_labels(expr: str) -> dict[str, set[str]]:
    """Label names each selector matches on: {metric: {label, ...}}."""
    found: dict[str, set[str]] = {}
    for name, matchers in _SELECTOR.findall(_STRING.sub('""', expr)):
        found.setdefault(name, set()).update(_MATCHER.findall(matchers))
    return found


def exported(exposition: str) -> dict[str, set[str]]:
    """Each sample name a /metrics text declares, with the label names its samples carry.

    A labelled family with no children yet (a counter before its first event) shows
    only its HELP and TYPE lines; its sample names still count as exported.
    """
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("", "_sum", "_count"),
            "info": ("_info",),
        }.get(family.type, ("",))
        for suffix in suffixes:
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def promtool() -> str:
    """The promtool binary; the test is skipped where it is not installed (CI installs it)."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return binary


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def check_as_rules(queries: list[Query], workdir: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` on each query written as a recording rule `query:<n>`."""
    rules = [{"record": f"query:{i}", "expr": as_promql(q.expr)} for i, q in enumerate(queries)]
    path = workdir / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    return run_promtool("check", "rules", path)
