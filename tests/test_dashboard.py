"""The Grafana dashboard (docs/grafana/rollproof.json) and docs/operating.md's metric tables against
the metric definitions (adapters/telemetry.py, miner/metrics.py, validator/metrics.py,
trainer/metrics.py): every name a panel reads exists, every defined metric is on the dashboard, and
the docs list every metric with its type and labels. tests/test_prometheus_scrape.py (marker
telemetry) evaluates every expression in a real Prometheus scraping a real node."""

from __future__ import annotations

import re

import pytest

from dashboard_env import (
    SUBSTITUTIONS, all_panels, alert_rule_exprs, bucket_outside_quantile, defined_families, documented_metrics,
    grafana_variables, load_dashboard, metric_names, panel_queries, substitute, variable_selectors,
)

# defined metrics left off the dashboard on purpose (name -> why); every other one has a panel
DELIBERATELY_ABSENT: dict[str, str] = {}


@pytest.fixture(scope="module")
def dashboard():
    return load_dashboard()


@pytest.fixture(scope="module")
def families():
    return defined_families()


def _samples(families) -> dict[str, str]:
    """sample name -> the metric it belongs to"""
    return {s: f.name for f in families.values() for s in f.samples}


def test_expression_parser_finds_metrics_and_rejects_unknown_calls():
    expr = ('histogram_quantile(0.95, sum by (uid, le) (rate(a_seconds_bucket{instance=~"$instance",'
            'uid=~"x|y"}[15m]))) / on (uid) group_left () b_total offset 5m + 1e3 and c')
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c"}
    assert bucket_outside_quantile(expr) == []
    assert bucket_outside_quantile("sum(rate(a_seconds_bucket[5m]))") == ["a_seconds_bucket"]
    with pytest.raises(AssertionError, match="not a PromQL function"):
        metric_names("rates(a_total[5m])")


def test_dashboard_is_an_importable_grafana_dashboard(dashboard):
    assert dashboard["schemaVersion"] >= 39  # Grafana 10.4 and later
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables["DS_PROMETHEUS"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    panels = [p for p in all_panels(dashboard) if p["type"] != "row"]
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells = {}
    for p in all_panels(dashboard):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
    for p in panels:
        assert p["description"].strip() and p["targets"], p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"].strip(), p["title"]
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, v["name"]


def test_every_variable_an_expression_uses_is_defined(dashboard):
    defined = {"$" + v["name"] for v in dashboard["templating"]["list"]} | {"$__range", "$__rate_interval",
                                                                            "$__interval"}
    assert set(SUBSTITUTIONS) <= defined
    for q in panel_queries(dashboard) + variable_selectors(dashboard):
        assert grafana_variables(q.expr) <= defined, (q.panel, q.expr)
        assert "$" not in substitute(q.expr)


def test_every_expression_reads_defined_metrics(dashboard, families):
    samples = _samples(families)
    histograms = {f.name for f in families.values() if f.type == "histogram"}
    for q in panel_queries(dashboard) + variable_selectors(dashboard):
        names = metric_names(q.expr)
        assert names, (q.panel, q.expr)
        unknown = sorted(n for n in names if n not in samples)
        # a counter without _total or a histogram's base name is not a sample name: unknown too
        assert not unknown, f"{q.panel} ({q.ref}) reads metrics no class defines: {unknown}"
        assert not bucket_outside_quantile(q.expr), f"{q.panel}: a _bucket series outside histogram_quantile"
        for n in names:
            if samples[n] in histograms and n.endswith("_bucket"):
                assert "histogram_quantile" in q.expr


def test_every_defined_metric_is_on_the_dashboard(dashboard, families):
    used = set().union(*(metric_names(q.expr) for q in panel_queries(dashboard)))
    missing = sorted(f.name for f in families.values() if not (f.samples & used) and f.name not in DELIBERATELY_ABSENT)
    assert not missing, f"defined metrics without a panel (add one or list them in DELIBERATELY_ABSENT): {missing}"
    for name in DELIBERATELY_ABSENT:
        assert name in families, f"DELIBERATELY_ABSENT names {name}, which no class defines"
        assert not (families[name].samples & used), f"{name} is on the dashboard and in DELIBERATELY_ABSENT"


def test_operating_md_documents_every_metric(families):
    rows = documented_metrics()
    names = [r.name for r in rows]
    assert len(names) == len(set(names)), f"documented twice: {sorted({n for n in names if names.count(n) > 1})}"
    documented = {r.name: r for r in rows}
    assert not (set(documented) - set(families)), \
        f"docs/operating.md lists metrics no class defines: {sorted(set(documented) - set(families))}"
    assert not (set(families) - set(documented)), \
        f"docs/operating.md does not list: {sorted(set(families) - set(documented))}"
    for name, fam in families.items():
        row = documented[name]
        assert row.type == fam.type, f"{name}: documented as {row.type}, defined as {fam.type}"
        assert row.labels == fam.labels, f"{name}: labels {sorted(row.labels)}, defined {sorted(fam.labels)}"
        assert len(row.meaning) > 10, f"{name}: no meaning given"


def test_operating_md_alert_rules_read_defined_metrics(families):
    samples = set(_samples(families)) | {"up"}  # Prometheus's own series: 1 while the target answers
    exprs = alert_rule_exprs()
    assert len(exprs) >= 4  # miner missing windows, validator lag, dependency down, no learning signal
    for expr in exprs:
        names = metric_names(expr)
        assert names and names <= samples, (expr, sorted(names - samples))
        assert not re.search(r"\$\w+", expr), f"an alert rule is plain PromQL, no Grafana variables: {expr}"
