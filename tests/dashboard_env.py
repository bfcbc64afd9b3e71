"""The Grafana dashboard (docs/grafana/rollproof.json) and the metric definitions it is checked
against, for tests/test_dashboard.py (names, docs) and tests/test_prometheus_scrape.py (every
expression evaluated by a real Prometheus)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.metrics import MetricWrapperBase

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "docs" / "grafana" / "rollproof.json"
OPERATING = REPO / "docs" / "operating.md"
METRICS_SECTION = "Metrics and status page"  # the heading of docs/operating.md's section

# what Grafana puts in for a variable when an expression is sent to Prometheus by hand: every
# dashboard variable at "All" (its allValue .*) and the built-in intervals
SUBSTITUTIONS = {"$instance": ".*", "$role": ".*", "$uid": ".*",
                 "$__range": "1h", "$__rate_interval": "1m", "$__interval": "15s"}

# PromQL functions and aggregation operators an expression may call (a name followed by "(")
PROMQL_CALLS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes", "clamp",
    "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "delta", "deriv", "floor", "group",
    "histogram_quantile", "increase", "irate", "label_join", "label_replace", "last_over_time", "max",
    "max_over_time", "min", "min_over_time", "quantile", "quantile_over_time", "rate", "resets", "round",
    "scalar", "sort", "sort_desc", "stddev", "sum", "sum_over_time", "time", "timestamp", "topk", "vector",
}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)")


@dataclass(frozen=True)
class Query:
    panel: str  # the panel's title (or "variable NAME")
    ref: str  # the target's refId
    expr: str  # as written in the dashboard, Grafana variables included


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict) -> list[dict]:
    """Every panel, rows' collapsed children included."""
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def panel_queries(dashboard: dict) -> list[Query]:
    return [Query(p["title"], t["refId"], t["expr"])
            for p in all_panels(dashboard) if p["type"] != "row" for t in p.get("targets", [])]


def variable_selectors(dashboard: dict) -> list[Query]:
    """The series selector inside each query variable's label_values(SELECTOR, label) (a selector
    Prometheus evaluates as an expression); label_values(label) has none."""
    out = []
    for v in dashboard["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q.strip())
        if m:
            out.append(Query(f"variable {v['name']}", "", m.group(1)))
        else:
            assert re.fullmatch(r"label_values\(\w+\)", q.strip()), f"variable {v['name']}: {q!r}"
    return out


def grafana_variables(expr: str) -> set[str]:
    return set(re.findall(r"\$\w+", expr))


def substitute(expr: str) -> str:
    """The expression as Grafana sends it with every variable at All; KeyError for a variable the
    dashboard does not define."""
    return re.sub(r"\$\w+", lambda m: SUBSTITUTIONS[m.group(0)], expr)


def _strip(expr: str) -> str:
    """The expression without label matchers, strings, range selectors and grouping label lists,
    which are the places a name can stand that is not a metric or a function."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    s = re.sub(r"\{[^{}]*\}", " ", s)
    s = re.sub(r"\[[^\[\]]*\]", " ", s)
    return _LABEL_LIST.sub(" ", s)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads; AssertionError for a call PromQL does not have."""
    s = _strip(expr)
    names = set()
    for m in _IDENT.finditer(s):
        word = m.group(1)
        if re.match(r"\s*\(", s[m.end():]):
            assert word in PROMQL_CALLS, f"{word}(...) is not a PromQL function: {expr}"
        elif word.lower() not in PROMQL_KEYWORDS:
            names.add(word)
    return names


def bucket_outside_quantile(expr: str) -> list[str]:
    """Names ending _bucket that stand outside every histogram_quantile(...) call."""
    spans = []
    for m in re.finditer(r"histogram_quantile\s*\(", expr):
        depth, i = 1, m.end()
        while depth and i < len(expr):
            depth += {"(": 1, ")": -1}.get(expr[i], 0)
            i += 1
        spans.append((m.start(), i))
    return [m.group(0) for m in re.finditer(r"\w+_bucket\b", expr)
            if not any(a <= m.start() < b for a, b in spans)]


@dataclass(frozen=True)
class Family:
    name: str  # the name as scraped: counters with _total, info with _info, histograms' base name
    type: str  # counter, gauge, histogram, info
    labels: frozenset[str]  # the labels the definition declares (an info metric's fields included)
    samples: frozenset[str]  # the sample names it exposes (histograms: _bucket, _sum, _count)


def defined_families() -> dict[str, Family]:
    """Every metric the four metric classes define, by scraped name: all four built on one
    registry, each labelled metric given one sample, the samples collected."""
    from adapters.telemetry import NodeMetrics, build_labels, metrics_of
    from miner.metrics import MinerMetrics
    from trainer.metrics import TrainerMetrics
    from validator.metrics import ValidatorMetrics

    registry = CollectorRegistry()
    declared: dict[str, tuple[str, ...]] = {}
    for cls in (NodeMetrics, MinerMetrics, ValidatorMetrics, TrainerMetrics):
        instance = metrics_of(cls, registry)
        for metric in vars(instance).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            labels = tuple(metric._labelnames)
            # an info metric's fields are labels too: the ones every role sets (set_build_info)
            declared[metric._name] = labels + (tuple(build_labels()) if isinstance(metric, Info) else ())
            child = metric.labels(*(f"l{i}" for i in range(len(labels)))) if labels else metric
            if isinstance(metric, Counter):
                child.inc()
            elif isinstance(metric, Gauge):
                child.set(1)
            elif isinstance(metric, Histogram):
                child.observe(1)
            elif isinstance(metric, Info):
                child.info(build_labels())
            else:
                raise AssertionError(f"{metric._name}: a metric type this test does not know")
    out = {}
    for fam in registry.collect():
        samples = frozenset(s.name for s in fam.samples)
        scraped = {"counter": fam.name + "_total", "info": fam.name + "_info"}.get(fam.type, fam.name)
        out[scraped] = Family(scraped, fam.type, frozenset(declared[fam.name]), samples)
    return out


@dataclass(frozen=True)
class DocRow:
    name: str
    type: str
    labels: frozenset[str]
    meaning: str


def metrics_section() -> str:
    text = OPERATING.read_text()
    m = re.search(rf"^## [^\n]*{re.escape(METRICS_SECTION)}[^\n]*\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, f"docs/operating.md has no '## ... {METRICS_SECTION}' section"
    return m.group(1)


def documented_metrics() -> list[DocRow]:
    """The rows of the section's metric tables: | `name` | type | `label`, ... (or none) | meaning |."""
    rows = []
    for line in metrics_section().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not re.fullmatch(r"`rollproof_\w+`", cells[0]):
            continue
        labels = frozenset(re.findall(r"`(\w+)`", cells[2]))
        rows.append(DocRow(cells[0].strip("`"), cells[1], labels, " ".join(cells[3:])))
    return rows


def yaml_blocks() -> list[object]:
    """The ```yaml blocks of the section, parsed."""
    import yaml

    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", metrics_section(), re.S)]


def alert_rules_doc() -> dict:
    """The section's example alert rules: the yaml block holding a Prometheus rule file (groups)."""
    rules = [b for b in yaml_blocks() if isinstance(b, dict) and "groups" in b]
    assert len(rules) == 1, "docs/operating.md's metrics section needs one yaml block of alert rules (groups:)"
    return rules[0]


def alert_rule_exprs() -> list[str]:
    return [r["expr"] for g in alert_rules_doc()["groups"] for r in g["rules"]]
