"""The Grafana dashboard: importable structure, one datasource variable, PromQL that parses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dashboards.promql import (
    Query,
    as_promql,
    check_as_rules,
    dashboard_queries,
    load_dashboard,
    metric_names,
    panels,
    variable_metrics,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What the dashboard is for: each of these is shown by at least one panel.
SHOWN = {
    "rollgate_rollout_candidate_weight_percent",
    "rollgate_traffic_weight_percent",
    "rollgate_rollout_phase",
    "rollgate_requests_total",
    "rollgate_request_duration_seconds_bucket",
    "rollgate_time_to_first_token_seconds_bucket",
    "rollgate_inter_token_latency_seconds_bucket",
    "rollgate_output_tokens_sum",
    "rollgate_feedback_score_sum",
    "rollgate_feedback_score_count",
    "rollgate_safety_incidents_total",
    "rollgate_shadow_similarity_sum",
    "rollgate_shadow_length_ratio_sum",
    "rollgate_shadow_latency_delta_seconds_sum",
    "rollgate_shadow_dropped_total",
    "vllm:num_requests_waiting",
    "vllm:num_requests_running",
    "vllm:kv_cache_usage_perc",
}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return load_dashboard()


def test_a_datasource_variable_of_type_prometheus(dashboard) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_a_route_variable_from_a_rollgate_metric(dashboard) -> None:
    route = next(v for v in dashboard["templating"]["list"] if v["name"] == "route")
    assert route["datasource"] == DATASOURCE
    assert variable_metrics(dashboard)["route"].startswith("rollgate_")
    assert route["includeAll"]
    assert route["allValue"] == ".*"  # every route, even one newer than the last refresh


def test_every_panel_and_query_uses_the_datasource_variable(dashboard) -> None:
    for panel in panels(dashboard):
        if panel["type"] == "row":
            assert not panel.get("targets"), panel["title"]
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    prometheus = [a for a in dashboard["annotations"]["list"] if "expr" in a or "target" in a]
    assert prometheus
    for annotation in prometheus:
        assert annotation["datasource"] == DATASOURCE, annotation["name"]


def test_rollgate_queries_filter_by_the_route_variable(dashboard) -> None:
    for query in dashboard_queries(dashboard):
        names = metric_names(query.expr)
        # The controller and the replica pools are not per route.
        per_route = [
            n
            for n in names
            if n.startswith("rollgate_")
            and n != "rollgate_controller_leader"
            and not n.startswith("rollgate_pool_")
        ]
        if per_route:
            assert '$route"' in query.expr, query.where


def test_decisions_are_annotated_from_the_transitions_counter(dashboard) -> None:
    annotations = [a for a in dashboard["annotations"]["list"] if "expr" in a]
    assert any("rollgate_rollout_transitions_total" in metric_names(a["expr"]) for a in annotations)


def test_the_dashboard_shows_what_it_is_for(dashboard) -> None:
    used = set().union(*(metric_names(q.expr) for q in dashboard_queries(dashboard)))
    assert used >= SHOWN, sorted(SHOWN - used)


def test_panel_ids_are_unique_and_panels_do_not_overlap(dashboard) -> None:
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[x, y] = panel["title"]


def test_every_query_parses_as_promql(dashboard, tmp_path: Path) -> None:
    queries = dashboard_queries(dashboard)
    assert len(queries) > 20
    result = check_as_rules(queries, tmp_path)
    listing = "\n".join(f"query:{i} = {q.where}" for i, q in enumerate(queries))
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{listing}"


def test_the_parse_check_rejects_broken_promql(tmp_path: Path) -> None:
    """A control for the test above: promtool must fail a query with a PromQL error."""
    broken = [Query("broken", 'sum by (route) (rate(rollgate_requests_total{route=~"$route"}))')]
    result = check_as_rules(broken, tmp_path)
    assert result.returncode != 0
    assert "query:0" in result.stdout + result.stderr


def test_grafana_variables_are_replaced_and_unknown_ones_refused() -> None:
    expr = 'rate(x{route=~"$route", a="${route}"}[$__rate_interval]) offset $__interval'
    assert as_promql(expr) == 'rate(x{route=~"support", a="support"}[1m]) offset 1m'
    with pytest.raises(KeyError):
        as_promql("rate(x[$window])")
