"""deploy/: the Prometheus, Grafana and compose files parse and fit together, and every query in
the dashboards and alert rules names a metric (and labels) that shopml really exports.

What counts as exported is read, not listed: the service's ``/metrics`` page after a few
requests (built with ``create_app`` on a small home with a fake model source, once with one
worker and once in Prometheus multi-process mode, as ``shopml serve --workers 2`` and the image
run it), and the monitor's page as ``shopml monitor`` writes it for the node exporter, from a
monitoring store holding one check of every kind. A metric a dashboard uses must be on the
service's page in both modes, or on the monitor's page.

No Docker engine here: compose is checked statically. promtool (Debian's ``prometheus``
package), when installed, checks the configuration, runs the alert rules' unit tests and parses
every dashboard query.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = GRAFANA / "dashboards"

# -- a small PromQL reader ---------------------------------------------------------------------
# Enough of PromQL to find every series selector (metric name and label matchers), the labels
# named in by/without/on/ignoring/group_* lists, and Grafana's variables. It does not evaluate;
# promtool (below) checks the syntax when it is installed.
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<var>\$\{[^}]+\}|\$\w+|\[\[\w+\]\])
  | (?P<number>0[xX][0-9a-fA-F]+
      |(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<punct>[{}()\[\],])
  | (?P<op>=~|!~|==|!=|>=|<=|[-+*/%^<>=@])
    """,
    re.VERBOSE,
)
AGGREGATIONS = {
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
}
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = AGGREGATIONS | LABEL_LISTS | {"and", "or", "unless", "bool", "offset", "atan2"}
NUMBERS = {"inf", "nan"}
MATCH_OPS = {"=", "!=", "=~", "!~"}
_VAR_IN_STRING = re.compile(r"\$\{(\w+)[^}]*\}|\$(\w+)|\[\[(\w+)\]\]")


@dataclass
class Selector:
    metric: str | None
    matchers: list[tuple[str, str, str]] = field(default_factory=list)  # label, op, value


@dataclass
class Query:
    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)
    variables: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot read {expr[pos : pos + 20]!r} in {expr!r}")
        kind = m.lastgroup or ""
        if kind not in ("ws", "comment"):
            out.append((kind, m.group()))
        pos = m.end()
    return out


def _variable(token: str) -> str:
    name = token.strip("$[]{}")
    return name.split(":", 1)[0]  # ${var:csv}


def _string_variables(text: str) -> set[str]:
    return {next(g for g in m.groups() if g) for m in _VAR_IN_STRING.finditer(text)}


def parse_promql(expr: str) -> Query:
    """The selectors, grouping labels, Grafana variables and functions of a PromQL query."""
    toks = _tokens(expr)
    q = Query()
    i, n = 0, len(toks)

    def at(j: int) -> tuple[str, str] | None:
        return toks[j] if j < n else None

    def matchers(j: int, sel: Selector) -> int:
        # toks[j] is "{"; returns the index after the matching "}".
        j += 1
        while at(j) != ("punct", "}"):
            label, op, value = at(j), at(j + 1), at(j + 2)
            if (
                label is None
                or label[0] != "ident"
                or op is None
                or op[1] not in MATCH_OPS
                or value is None
                or value[0] != "string"
            ):
                raise ValueError(f"malformed label matcher near token {j} in {expr!r}")
            sel.matchers.append((label[1], op[1], value[1][1:-1]))
            q.variables |= _string_variables(value[1])
            j += 3
            if at(j) == ("punct", ","):
                j += 1
        return j + 1

    while i < n:
        kind, text = toks[i]
        if kind == "ident":
            low = text.lower()
            if low in LABEL_LISTS:
                i += 1
                if at(i) == ("punct", "("):
                    i += 1
                    while at(i) != ("punct", ")"):
                        tok = at(i)
                        if tok is None:
                            raise ValueError(f"unclosed label list in {expr!r}")
                        if tok[0] == "ident":
                            q.grouping.add(tok[1])
                        elif tok != ("punct", ","):
                            raise ValueError(f"unexpected {tok[1]!r} in a label list: {expr!r}")
                        i += 1
                    i += 1
                continue
            if low in KEYWORDS or low in NUMBERS:
                i += 1
                continue
            if at(i + 1) == ("punct", "("):
                q.functions.add(text)
                i += 1
                continue
            sel = Selector(text)
            i += 1
            if at(i) == ("punct", "{"):
                i = matchers(i, sel)
            q.selectors.append(sel)
            continue
        if (kind, text) == ("punct", "{"):
            sel = Selector(None)
            i = matchers(i, sel)
            q.selectors.append(sel)
            continue
        if (kind, text) == ("punct", "["):  # a range or subquery: durations and variables
            i += 1
            while at(i) != ("punct", "]"):
                tok = at(i)
                if tok is None:
                    raise ValueError(f"unclosed range in {expr!r}")
                if tok[0] == "var":
                    q.variables.add(_variable(tok[1]))
                i += 1
            i += 1
            continue
        if kind == "var":
            q.variables.add(_variable(text))
        elif kind == "string":
            q.variables |= _string_variables(text)
        i += 1
    for sel in q.selectors:
        for label, _, _ in sel.matchers:
            if label == "__name__" and sel.metric is None:
                raise ValueError(f"{{__name__=...}} selectors are not supported: {expr!r}")
    return q


def test_promql_reader() -> None:
    q = parse_promql(
        "histogram_quantile(0.99, sum by (route, le) (rate(shopml_request_duration_seconds_bucket"
        '{job="shopml", route=~"$route"}[$__rate_interval])))'
    )
    assert [s.metric for s in q.selectors] == ["shopml_request_duration_seconds_bucket"]
    assert q.selectors[0].matchers == [("job", "=", "shopml"), ("route", "=~", "$route")]
    assert q.grouping == {"route", "le"}
    assert q.variables == {"route", "__rate_interval"}
    assert q.functions == {"histogram_quantile", "rate"}
    q = parse_promql(
        "sum(rate(a_total[5m] offset 1h)) by (x) / on(x) group_left(y) b"
        ' or vector(0) > bool 1e-9 unless c{d!~"e.*"}[1h:5m] and Inf'
    )
    assert [s.metric for s in q.selectors] == ["a_total", "b", "c"]
    assert q.grouping == {"x", "y"}
    assert q.selectors[2].matchers == [("d", "!~", "e.*")]
    q = parse_promql('time() - max by (usecase) (m{usecase="${usecase}"}) > 3 * 3600')
    assert [s.metric for s in q.selectors] == ["m"] and q.variables == {"usecase"}
    assert parse_promql("up").selectors[0].metric == "up"
    for bad in ('m{a="b"', 'm{a=b"}', "m{a}", "m[5m", "m ; n", "sum by (a"):
        with pytest.raises(ValueError):
            parse_promql(bad)


# -- what the dashboards and rules hold ---------------------------------------------------------
GRAFANA_BUILTINS = {
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
    "__dashboard",
}


@dataclass
class Use:
    """One query somewhere in deploy/."""

    where: str  # file › panel › target, for the failure message
    expr: str
    legend: str = ""
    variables: set[str] = field(default_factory=set)  # defined where the query lives
    label_of: str | None = None  # a variable's label_values(..., label)


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: _load_json(p) for p in sorted(DASHBOARDS.glob("*.json"))}


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in panels:
        out.append(p)
        out += _panels(p.get("panels", []))
    return out


def _variable_query(v: dict[str, Any]) -> str:
    query = v.get("query")
    return str(query.get("query", "") if isinstance(query, dict) else query or "")


def dashboard_uses() -> list[Use]:
    uses = []
    for name, dash in _dashboards().items():
        variables = {v["name"] for v in dash.get("templating", {}).get("list", [])}
        for v in dash.get("templating", {}).get("list", []):
            if v.get("type") != "query":
                continue
            query, where = _variable_query(v), f"{name} › variable ${v['name']}"
            m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query, re.S)
            r = re.fullmatch(r"\s*query_result\((.*)\)\s*", query, re.S)
            if m:
                uses.append(Use(where, m.group(1), "", variables, m.group(2)))
            elif r:
                uses.append(Use(where, r.group(1), "", variables))
            else:
                raise AssertionError(f"{where}: unsupported variable query {query!r}")
        for panel in _panels(dash.get("panels", [])):
            for t in panel.get("targets", []):
                where = f"{name} › panel {panel.get('title')!r} › query {t.get('refId')}"
                uses.append(Use(where, t.get("expr", ""), t.get("legendFormat", ""), variables))
    return uses


def rule_uses() -> list[Use]:
    uses = []
    for group in _load_yaml(PROMETHEUS / "alerts.yml")["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            uses.append(Use(f"alerts.yml › {group['name']} › {name}", str(rule["expr"])))
    return uses


# -- what shopml exports --------------------------------------------------------------------------
# The service on a small home: one use case served by a fake model source, a customer in the
# online store, and requests that leave every labelled series behind (a prediction, a 404).
SERVICE_SCRIPT = r"""
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
from fastapi.testclient import TestClient

from shopml.online.store import SQLiteOnlineStore
from shopml.runtime.scorers import LinearScorer
from shopml.serving import create_app
from shopml.serving.models import VersionInfo
from shopml.settings import Settings

home = Path(sys.argv[1])
home.mkdir(parents=True, exist_ok=True)
store = SQLiteOnlineStore(home / "online.sqlite")
store.write(
    "customers",
    pd.DataFrame({"customer_id": ["C1"], "recency_days": [4.0], "frequency_orders": [3.0]}),
    "customer_id",
    datetime(2025, 1, 1),
)
store.close()
scorer = LinearScorer(
    features=["recency_days", "frequency_orders"], outputs=["y"], coef=[1.0, 2.0],
    intercept=0.0, mean=[0.0, 0.0], scale=[1.0, 1.0], fill=[0.0, 0.0],
)


class Source:  # a champion (v7) and a challenger (v8) in shadow, so the rollout counter counts
    def alias_version(self, usecase, alias):
        return VersionInfo("8" if alias == "challenger" else "7")

    def load(self, usecase, version):
        return scorer


settings = Settings(
    home=home, env="development", api_keys=[], admin_keys=[], online_store_uri=None,
    monitoring_store_uri=None, prediction_log_flush_seconds=0.05, rollout={"clv": "shadow"},
)
app = create_app(settings, source_factory=Source, usecases=["clv"])
with TestClient(app, raise_server_exceptions=False) as client:
    assert client.post("/v1/clv/predict", json={"customer_id": "C1"}).status_code == 200
    assert client.post("/v1/clv/predict", json={"customer_id": "C9"}).status_code == 404
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200
    for _ in range(200):  # the shadow answer comes after the response
        page = client.get("/metrics")
        assert page.status_code == 200
        if "shopml_rollout_answers_total{" in page.text:
            break
        time.sleep(0.05)
    sys.stdout.write(page.text)
"""


def _service_pages(tmp: Path) -> tuple[str, str]:
    """The service's /metrics with one worker, and in multi-process mode (fresh processes, so
    nothing another test registered shows)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPML_", "PROMETHEUS_"))}
    env["SHOPML_CONFIG"] = str(tmp / "no-shopml.toml")
    multi_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp / "multiproc")}
    (tmp / "multiproc").mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SERVICE_SCRIPT, str(tmp / home)],
            env=e,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for home, e in (("single", env), ("multi", multi_env))
    ]
    pages = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"the service script failed:\n{err[-3000:]}"
        pages.append(out)
    return pages[0], pages[1]


def _monitor_page(home: Path) -> str:
    """What ``shopml monitor`` writes for the node exporter, from a store holding one check of
    every kind for a few use cases (and, for one of them, an older check that must not show)."""
    from shopml.monitoring.run import write_gauges
    from shopml.monitoring.store import MetricRow, MonitoringStore
    from shopml.settings import Settings

    now = datetime(2025, 3, 1, tzinfo=UTC)
    window = (now - timedelta(days=7), now)
    checks: dict[str, list[MetricRow]] = {
        "returns": [
            MetricRow("drift", "share", 0.2),
            MetricRow("drift", "share_all", 0.3),
            MetricRow("drift", "drifted", 2.0),
            MetricRow("drift", "score", 0.05, feature="customer_return_rate"),
            MetricRow("drift", "score", 0.15, feature="unit_price"),
            MetricRow("prediction_drift", "score", 0.1, feature="probability"),
            MetricRow("volume", "predictions", 1000.0),
            MetricRow("performance", "auc", 0.7),
            MetricRow("reference", "auc", 0.75),
            MetricRow("degradation", "auc", 0.066),
            MetricRow("volume", "labelled", 500.0),
        ],
        "recommender": [
            MetricRow("volume", "predictions", 300.0),
            MetricRow("specific", "coverage", 0.4),
            MetricRow("specific", "novelty", 7.5),
            MetricRow("performance", "precision", 0.05),
        ],
        "pricing": [
            MetricRow("specific", "guardrail_violations", 0.0),
            MetricRow("specific", "revenue_realised_vs_expected", 0.97),
        ],
        "segments": [MetricRow("specific", "segment_share", 0.3, feature="loyal")],
    }
    store = MonitoringStore(None, home)
    try:
        for i, (usecase, rows) in enumerate(checks.items()):
            old = store.write_metrics(usecase, "2", now - timedelta(days=1), window, rows)
            store.write_decision(old, usecase, "2", now - timedelta(days=1), False, "", "", [], {})
            run = store.write_metrics(usecase, "3", now, window, rows)
            store.write_decision(run, usecase, "3", now, i == 0, "retrain", "", ["drift"], {})
    finally:
        store.close()
    path = write_gauges(Settings(home=home, monitoring_store_uri=None))
    assert path.relative_to(home).parts[:2] == ("reports", "monitoring") and path.suffix == ".prom"
    return path.read_text()


def _families(page: str) -> tuple[dict[str, set[str]], set[str]]:
    """Sample name -> label names for every sample on a Prometheus text page, and the names of
    the families the page declares (with samples or not)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, set[str]] = {}
    declared = set()
    for fam in text_string_to_metric_families(page):
        declared.add(fam.name)
        for s in fam.samples:
            samples.setdefault(s.name, set()).update(s.labels)
    return samples, declared


@dataclass
class Exports:
    single: dict[str, set[str]]  # the service, one worker: sample name -> labels
    multi: dict[str, set[str]]  # the service, several workers
    monitor: dict[str, set[str]]  # shopml monitor's metrics.prom
    single_declared: set[str]  # family names the pages declare
    monitor_declared: set[str]

    def labels(self, name: str) -> set[str] | None:
        """The labels of an exported sample name, or None when it is not exported everywhere
        it would have to be."""
        if name in self.monitor:
            return self.monitor[name]
        if name in self.single and name in self.multi:
            return self.single[name] | self.multi[name]
        return None

    def why_unknown(self, name: str) -> str:
        if name in self.single:
            return (
                "exported by a one-worker service only, not with --workers > 1 (the image runs 2 "
                "workers in Prometheus multi-process mode)"
            )
        if name in self.multi:
            return "exported in Prometheus multi-process mode only, not by a one-worker service"
        return "exported neither by the service nor by the monitor"


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    tmp = tmp_path_factory.mktemp("deploy-exports")
    single, multi = _service_pages(tmp)
    (single_samples, single_declared), (multi_samples, _) = _families(single), _families(multi)
    monitor_samples, monitor_declared = _families(_monitor_page(tmp / "mon"))
    return Exports(
        single_samples, multi_samples, monitor_samples, single_declared, monitor_declared
    )


# -- checking a query against the exports ---------------------------------------------------------
SAMPLE_SUFFIXES = ("", "_total", "_bucket", "_count", "_sum")  # a family's series
TARGET_LABELS = {"job", "instance"}  # Prometheus adds them to every scraped series
SYNTHETIC = {"up"}  # series Prometheus writes per target itself


def _jobs() -> set[str]:
    return {j["job_name"] for j in _load_yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"]}


def check_use(use: Use, exports: Exports, jobs: set[str]) -> list[str]:
    """Everything wrong with one query, as messages naming where it is."""
    try:
        q = parse_promql(use.expr)
    except ValueError as exc:
        return [f"{use.where}: {exc}"]
    problems = []
    if not q.selectors:
        problems.append(f"{use.where}: no metric in {use.expr!r}")
    known = set(TARGET_LABELS)
    for sel in q.selectors:
        if sel.metric is None:
            problems.append(f"{use.where}: a selector without a metric name in {use.expr!r}")
            continue
        labels = set() if sel.metric in SYNTHETIC else exports.labels(sel.metric)
        if labels is None:
            problems.append(
                f"{use.where}: unknown metric {sel.metric!r} ({exports.why_unknown(sel.metric)})"
            )
            continue
        allowed = labels | TARGET_LABELS
        known |= allowed
        for label, op, value in sel.matchers:
            if label not in allowed:
                problems.append(
                    f"{use.where}: {sel.metric} has no label {label!r} "
                    f"(it has {', '.join(sorted(allowed))})"
                )
            if label == "job" and op == "=" and value not in jobs:
                problems.append(
                    f"{use.where}: job {value!r} is not a scrape job of prometheus.yml "
                    f"({', '.join(sorted(jobs))})"
                )
    for label in sorted(q.grouping - known):
        problems.append(f"{use.where}: groups by {label!r}, a label none of its metrics has")
    for label in sorted(set(re.findall(r"\{\{\s*(\w+)\s*\}\}", use.legend)) - known):
        problems.append(f"{use.where}: the legend uses {{{{{label}}}}}, a label it does not have")
    if use.label_of is not None and use.label_of not in known:
        problems.append(f"{use.where}: label_values of {use.label_of!r}, which it does not have")
    for var in sorted(q.variables - use.variables - GRAFANA_BUILTINS):
        problems.append(f"{use.where}: ${var} is not a variable of the dashboard")
    return problems


def test_every_query_names_a_metric_shopml_exports(exports: Exports) -> None:
    uses = dashboard_uses() + rule_uses()
    assert len(uses) > 40, "fewer queries than the dashboards and rules hold: reading them broke"
    jobs = _jobs()
    problems = [p for use in uses for p in check_use(use, exports, jobs)]
    assert not problems, "queries in deploy/ that do not match what shopml exports:\n" + "\n".join(
        problems
    )


def test_the_check_catches_what_is_not_exported(exports: Exports) -> None:
    """The check above cannot pass vacuously: made-up and near-miss names are reported."""
    jobs = _jobs()

    def problems(expr: str, legend: str = "", variables: frozenset[str] = frozenset()) -> str:
        return "\n".join(check_use(Use("self-check", expr, legend, set(variables)), exports, jobs))

    assert "unknown metric 'shopml_made_up_total'" in problems(
        "sum(rate(shopml_made_up_total[5m]))"
    )
    # A histogram is queried through its _bucket/_sum/_count series, a counter through _total.
    assert "unknown metric 'shopml_request_duration_seconds'" in problems(
        "rate(shopml_request_duration_seconds[5m])"
    )
    assert "unknown metric 'shopml_requests'" in problems("rate(shopml_requests[5m])")
    assert problems("rate(shopml_request_duration_seconds_count[5m])") == ""
    assert "unknown metric 'shopml_monitor_drift_shares'" in problems(
        'shopml_monitor_drift_shares{usecase="returns"}'
    )
    assert problems('shopml_monitor_drift_share{usecase="returns"}') == ""
    # A metric only a one-worker service exports (the process collector's) does not count.
    only_single = sorted(set(exports.single) - set(exports.multi))
    assert only_single, "expected the one-worker page to have series multi-process mode lacks"
    assert "one-worker service only" in problems(f"{only_single[0]}")
    # Labels, jobs, legends and variables.
    assert "has no label 'rout'" in problems('shopml_requests_total{rout="/health"}')
    assert "groups by 'usecase'" in problems("sum by (usecase) (shopml_requests_total)")
    assert "job 'shopm' is not a scrape job" in problems('up{job="shopm"}')
    assert "{{output}}" in problems("shopml_monitor_drift_share", legend="{{output}}")
    assert "$usecase is not a variable" in problems(
        'shopml_monitor_drift_share{usecase="$usecase"}'
    )
    assert problems('shopml_monitor_drift_share{usecase="$usecase"}', variables={"usecase"}) == ""


def test_the_exports_cover_every_monitor_gauge_and_service_metric(exports: Exports) -> None:
    """Every metric the service and the monitor declare has samples on the pages the check
    reads (otherwise a dashboard using it would be reported unknown for want of a request or a
    fixture row, and the check would judge less than shopml exports)."""
    from shopml.gauges import metric_names

    assert set(metric_names()) <= exports.monitor_declared
    unsampled = sorted(n for n in exports.monitor_declared if n not in exports.monitor)
    assert not unsampled, f"the monitor fixture has no row for {unsampled}: add rows of that kind"
    service = {
        n for n in exports.single_declared if n.startswith("shopml_") and not n.endswith("_created")
    } - set(metric_names())  # (the text format shows each counter's creation time as a gauge)
    assert {"shopml_requests", "shopml_request_duration_seconds", "shopml_prediction"} <= service
    for name in sorted(service):
        samples = {name + suffix for suffix in SAMPLE_SUFFIXES} & set(exports.single)
        assert samples, f"the service declares {name}, but the requests left no sample of it"
        assert samples & set(exports.multi), f"{name}: no sample in multi-process mode"


def test_every_exported_metric_has_a_panel(exports: Exports) -> None:
    """The dashboards show everything shopml exports about itself (a new metric needs a panel)."""
    used = {
        sel.metric
        for use in dashboard_uses()
        for sel in parse_promql(use.expr).selectors
        if sel.metric
    }
    families = {}
    for name in [*exports.monitor, *(n for n in exports.single if n in exports.multi)]:
        if name.startswith("shopml_") and not name.endswith("_created"):
            base = re.sub(r"_(bucket|sum|count|total)$", "", name)  # see SAMPLE_SUFFIXES
            families.setdefault(base, set()).add(name)
    unshown = sorted(base for base, names in families.items() if not names & used)
    assert not unshown, f"exported but on no dashboard: {unshown}"


# -- the files themselves -----------------------------------------------------------------------
def _deploy_files(*suffixes: str) -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in suffixes)


@pytest.mark.parametrize(
    "path", _deploy_files(".yml", ".yaml", ".json"), ids=lambda p: str(p.relative_to(DEPLOY))
)
def test_every_file_parses(path: Path) -> None:
    data = _load_json(path) if path.suffix == ".json" else _load_yaml(path)
    assert isinstance(data, dict) and data, f"{path} holds no mapping"


def test_the_files_exist() -> None:
    for rel in (
        "prometheus/prometheus.yml",
        "prometheus/alerts.yml",
        "prometheus/alerts.test.yml",
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/shopml.yml",
        "grafana/dashboards/shopml-service.json",
        "grafana/dashboards/shopml-models.json",
        "compose.yaml",
        ".env.example",
        "production.env",
        "postgres/init-databases.sql",
        "Dockerfile.serve",
        "Dockerfile.serve.dockerignore",
        "Dockerfile.worker",
        "Dockerfile.worker.dockerignore",
        "Dockerfile.mlflow",
        "Dockerfile.mlflow.dockerignore",
    ):
        assert (DEPLOY / rel).is_file(), rel


def _datasource() -> dict[str, Any]:
    sources = _load_yaml(GRAFANA / "provisioning/datasources/prometheus.yml")["datasources"]
    assert len(sources) == 1 and sources[0]["type"] == "prometheus"
    return dict(sources[0])


PANEL_TYPES = {
    "row",
    "stat",
    "timeseries",
    "state-timeline",
    "table",
    "bargauge",
    "heatmap",
    "text",
}


@pytest.mark.parametrize("name", sorted(_dashboards()))
def test_dashboard_structure(name: str) -> None:
    dash = _dashboards()[name]
    uid = _datasource()["uid"]
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    assert dash.get("id") is None, "provisioned dashboards carry no database id"
    panels = _panels(dash["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
    problems = []
    for p in panels:
        where = f"{name} › panel {p.get('title')!r}"
        if p.get("type") not in PANEL_TYPES:
            problems.append(f"{where}: unknown panel type {p.get('type')!r}")
        grid = p.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in "hwxy") or grid["x"] + grid["w"] > 24:
            problems.append(f"{where}: bad gridPos {grid}")
        if p["type"] == "row":
            continue
        if not p.get("title"):
            problems.append(f"{where}: no title")
        if p.get("datasource", {}).get("uid") != uid:
            problems.append(f"{where}: datasource is not the provisioned one ({uid})")
        targets = p.get("targets", [])
        if not targets:
            problems.append(f"{where}: no query")
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)):
            problems.append(f"{where}: refIds repeat")
        for t in targets:
            if not t.get("expr", "").strip():
                problems.append(f"{where}: query {t.get('refId')} has no expr")
            if t.get("datasource", {}).get("uid", uid) != uid:
                problems.append(f"{where}: query {t.get('refId')} uses another datasource")
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query" and v.get("datasource", {}).get("uid") != uid:
            problems.append(f"{name} › variable {v['name']}: not the provisioned datasource")
    assert not problems, "\n".join(problems)


def test_dashboard_uids_are_unique_and_both_exist() -> None:
    uids = [d["uid"] for d in _dashboards().values()]
    assert len(uids) == len(set(uids))
    assert {"shopml-service", "shopml-models"} <= set(uids)


def test_alert_rules_are_complete() -> None:
    rules = [r for g in _load_yaml(PROMETHEUS / "alerts.yml")["groups"] for r in g["rules"]]
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for r in rules:
        assert r["labels"]["severity"] in {"warning", "critical"}, r["alert"]
        assert r["annotations"]["summary"], r["alert"]
        assert re.fullmatch(r"(\d+[smhd])+", r.get("for", "0m")), r["alert"]
    exprs = " ".join(str(r["expr"]) for r in rules)
    # What issue 6 asks the rules to watch.
    for metric in (
        "shopml_monitor_alert_active",
        "shopml_monitor_drift_share",
        "shopml_monitor_degradation",
        "shopml_monitor_last_check_timestamp_seconds",
        'status=~"5.."',
        "shopml_request_duration_seconds_bucket",
        "shopml_registry_up",
        "shopml_prediction_log_dropped_total",
    ):
        assert metric in exprs, metric
    tested = {
        t["alertname"]
        for case in _load_yaml(PROMETHEUS / "alerts.test.yml")["tests"]
        for t in case.get("alert_rule_test", [])
    }
    assert set(names) - {"ShopmlMonitorExporterDown"} <= tested, set(names) - tested


# -- compose, Prometheus and Grafana fit together ------------------------------------------------
def _compose() -> dict[str, Any]:
    return dict(_load_yaml(DEPLOY / "compose.yaml"))


_VOLUME = re.compile(r"((?:\$\{[^}]*\}|[^:$])+):((?:\$\{[^}]*\}|[^:$])+)(?::(ro|rw))?")


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a path relative to deploy/, one with ${VAR}, or a volume)."""
    out = {}
    for v in service.get("volumes", []):
        m = _VOLUME.fullmatch(v)
        assert m, f"cannot read the volume {v!r}"
        out[m.group(2)] = m.group(1)
    return out


def _host_path(service: dict[str, Any], container_path: str) -> Path:
    """Where a container path of a bind mount is in deploy/."""
    for dst, src in sorted(_mounts(service).items(), key=lambda kv: -len(kv[0])):
        if container_path == dst or container_path.startswith(dst.rstrip("/") + "/"):
            assert src.startswith("./"), f"{container_path} is not mounted from deploy/"
            return DEPLOY / src / Path(container_path).relative_to(dst)
    raise AssertionError(f"{container_path} is not mounted")


def _flag(service: dict[str, Any], name: str) -> str:
    for arg in service.get("command", []):
        if arg.startswith(f"--{name}="):
            return str(arg.split("=", 1)[1])
    raise AssertionError(f"no --{name} in {service.get('command')}")


SERVICES = {
    "postgres",
    "minio",
    "minio-init",
    "mlflow",
    "prefect-server",
    "redis",
    "worker",
    "api",
    "node-exporter",
    "prometheus",
    "grafana",
}


def _dockerfile(service: dict[str, Any]) -> Path:
    build = service["build"]
    return (DEPLOY / build["context"] / build.get("dockerfile", "Dockerfile")).resolve()


def test_compose_services_and_files() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        for src in _mounts(svc).values():
            if src.startswith("."):
                assert (DEPLOY / src).exists(), f"{name} mounts {src}, which does not exist"
            else:
                assert src in compose.get("volumes", {}), f"{name}: volume {src} not declared"
        for env_file in svc.get("env_file", []):
            assert (DEPLOY / env_file).is_file(), f"{name}: env_file {env_file} missing"
        if "build" in svc:
            assert (DEPLOY / svc["build"]["context"]).is_dir(), f"{name}: no build context"
            assert _dockerfile(svc).is_file(), f"{name}: no Dockerfile"
        else:
            image = svc["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
    # The slim serving image for the API, the full one for the worker, both from the repo root.
    assert _dockerfile(services["api"]) == DEPLOY / "Dockerfile.serve"
    assert _dockerfile(services["worker"]) == DEPLOY / "Dockerfile.worker"
    for name in ("api", "worker"):
        assert (DEPLOY / services[name]["build"]["context"]).resolve() == ROOT
    # Named volumes are all used.
    used = {src for svc in services.values() for src in _mounts(svc).values()}
    assert set(compose["volumes"]) <= used


@pytest.mark.parametrize(
    "dockerfile", ["Dockerfile.serve", "Dockerfile.worker", "Dockerfile.mlflow"]
)
def test_the_build_context_keeps_what_the_image_copies(dockerfile: str) -> None:
    """<Dockerfile>.dockerignore allows only what the Dockerfile copies from the context."""
    ignore = (DEPLOY / f"{dockerfile}.dockerignore").read_text().splitlines()
    rules = [r.strip() for r in ignore if r.strip() and not r.startswith("#")]
    assert rules[0] == "*", "the ignore file is an allow-list"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    copies = re.findall(r"^COPY (?!--from)(.+)$", (DEPLOY / dockerfile).read_text(), re.M)
    sources = {src.rstrip("/") for line in copies for src in line.split()[:-1]}
    assert sources <= allowed, sources - allowed
    assert all((ROOT / a).exists() for a in allowed)


def test_images_run_as_a_user_with_a_healthcheck() -> None:
    for name in ("Dockerfile.serve", "Dockerfile.worker", "Dockerfile.mlflow"):
        text = (DEPLOY / name).read_text()
        final = text.rsplit("\nFROM ", 1)[-1]  # the stage that runs
        user = re.findall(r"^USER (\S+)", final, re.M)
        assert user and user[-1] not in ("root", "0"), f"{name}: runs as root"
        assert re.search(r"^HEALTHCHECK ", final, re.M), f"{name}: no HEALTHCHECK"
        assert re.findall(r"^FROM (\S+)", text, re.M) and all(
            ":" in image and not image.endswith(":latest")
            for image in re.findall(r"^FROM (\S+)", text, re.M)
        ), f"{name}: unpinned base image"


def test_the_worker_image_can_run_the_spark_engine() -> None:
    """A headless JRE 17 in the stage that runs, on a Debian release that has it (bookworm:
    the newer one the bare ``-slim`` tag follows has no openjdk-17), and PySpark in the venv."""
    text = (DEPLOY / "Dockerfile.worker").read_text()
    build, final = text.rsplit("\nFROM ", 1)
    assert re.match(r"python:3\.11-slim-bookworm\n", final)
    assert re.findall(r"^FROM (\S+)", build, re.M) == ["python:3.11-slim-bookworm"]
    install = re.search(r"apt-get install -y --no-install-recommends ([^&]+)", final)
    assert install and "openjdk-17-jre-headless" in install.group(1).split()
    assert '".[all]"' in build  # the all extra carries the spark one (pyspark)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(e.startswith("shopml[") and "spark" in e for e in extras["all"])
    assert any(d.startswith("pyspark") for d in extras["spark"])


def test_the_worker_deploys_once_then_runs_the_worker() -> None:
    command = _compose()["services"]["worker"]["command"]
    assert command[:2] == ["sh", "-c"]
    assert re.fullmatch(r"shopml deploy( [^&;|]*)? && exec shopml worker", command[2])


def test_start_up_order_follows_healthchecks() -> None:
    """Every dependency is waited for by condition: healthy services declare a healthcheck
    (in compose or in the image they build), one-shot jobs do not restart."""
    services = _compose()["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on without conditions"
        for dep, how in deps.items():
            assert dep in services, f"{name} depends on {dep}, not a service"
            condition = how["condition"]
            if condition == "service_healthy":
                target = services[dep]
                has = "healthcheck" in target or (
                    "build" in target
                    and re.search(r"^HEALTHCHECK ", _dockerfile(target).read_text(), re.M)
                )
                assert has, f"{name} waits for {dep} to be healthy; {dep} has no healthcheck"
            else:
                assert condition == "service_completed_successfully", (name, dep, condition)
                assert services[dep].get("restart") == "no", f"{dep} is a one-shot job"
    # The long-running services restart; everything shopml talks to is waited for.
    for name, svc in services.items():
        if name != "minio-init":
            assert svc.get("restart") == "unless-stopped", name
    worker = set(services["worker"]["depends_on"])
    assert worker == {"postgres", "redis", "minio-init", "mlflow", "prefect-server"}
    assert set(services["api"]["depends_on"]) == {"postgres", "redis", "mlflow"}


def test_ports_are_published_on_loopback_only() -> None:
    for name, svc in _compose()["services"].items():
        for port in svc.get("ports", []):
            assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+", str(port)), f"{name}: {port}"
        assert not svc.get("privileged") and svc.get("network_mode") != "host", name


SECRET = re.compile(r"PASSWORD|SECRET|_KEYS?$|TOKEN", re.I)


def _environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    return {k: "" if v is None else str(v) for k, v in env.items()}


def test_secrets_come_only_from_dotenv() -> None:
    """Secrets are ${VAR} references (to deploy/.env) in compose, never values; the profile
    holds none; every variable compose reads is documented in .env.example."""
    compose_text = (DEPLOY / "compose.yaml").read_text()
    for name, svc in _compose()["services"].items():
        for key, value in _environment(svc).items():
            if SECRET.search(key) or re.search(r"://[^/@:]*:[^/@]+@", value):
                assert re.search(r"\$\{[A-Z_]+(:[?-][^}]*)?\}", value), f"{name}: {key} literal"
                if SECRET.search(key) and key != "SHOPML_ADMIN_KEYS":
                    assert ":?" in value, f"{name}: {key} must be required (${{VAR:?...}})"
    profile = _env_file(DEPLOY / "production.env")
    assert not [k for k in profile if SECRET.search(k)], "secrets in the profile"
    assert not [v for v in profile.values() if re.search(r"://[^/@:]*:[^/@]+@", v)]
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (DEPLOY / ".env.example").read_text(), re.M)
    )
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_text))
    assert not used - documented, f"not in deploy/.env.example: {sorted(used - documented)}"
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "deploy/.env" in ignored


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", key), f"{path.name}: {line!r}"
            out[key] = value
    return out


def _listens(name: str, svc: dict[str, Any]) -> set[str]:
    """The ports a compose service listens on, from its command (or the image's default)."""
    command = " ".join(svc.get("command", []) if isinstance(svc.get("command"), list) else [])
    found = set(re.findall(r"--port[= ](\d+)", command))
    found |= {m.rsplit(":", 1)[1] for m in re.findall(r"--web\.listen-address=(\S+)", command)}
    defaults = {"postgres": "5432", "redis": "6379", "minio": "9000", "grafana": "3000"}
    if name in defaults:
        found.add(defaults[name])
    if name == "prometheus":
        found.add("9090")
    if "build" in svc:
        found |= set(re.findall(r"^EXPOSE (\d+)", _dockerfile(svc).read_text(), re.M))
    return found


def test_the_profile_points_at_the_compose_services() -> None:
    """deploy/production.env: settings shopml has, every URL a compose service on a port it
    listens on, the databases the init script creates, the bucket minio-init creates."""
    from shopml.settings import Settings

    services = _compose()["services"]
    profile = _env_file(DEPLOY / "production.env")
    fields = {f"SHOPML_{name.upper()}" for name in Settings.model_fields}
    shopml_keys = {k for k in profile if k.startswith("SHOPML_")}
    assert shopml_keys <= fields, shopml_keys - fields
    assert set(profile) - shopml_keys == {"PREFECT_API_URL", "AWS_DEFAULT_REGION"}
    settings = Settings(
        **{k.removeprefix("SHOPML_").lower(): v for k, v in profile.items() if k in shopml_keys}
    )
    assert settings.env == "production"
    for key, value in profile.items():
        for host, port in re.findall(r"://(?:[^@/]*@)?([\w-]+):(\d+)", value):
            assert host in services, f"{key}: {host} is not a compose service"
            assert port in _listens(host, services[host]), (
                f"{key}: {host} does not listen on {port}"
            )
    created = set(
        re.findall(r"CREATE DATABASE (\w+)", (DEPLOY / "postgres/init-databases.sql").read_text())
    )
    databases = {
        m.group(1)
        for v in [
            *profile.values(),
            *(" ".join(map(str, s.get("command", []))) for s in services.values()),
            *(v for s in services.values() for v in _environment(s).values()),
        ]
        for m in re.finditer(r"@postgres:5432/(\w+)", v)
    }
    assert databases == created == {"mlflow", "prefect", "shopml_monitoring"}
    init = " ".join(services["minio-init"]["command"])
    bucket = re.search(r"mc mb --ignore-existing shopml/([\w.-]+)", init)
    assert bucket, init
    buckets = {m for v in profile.values() for m in re.findall(r"s3://([\w.-]+)/", v)}
    buckets |= set(re.findall(r"s3://([\w.-]+)/", " ".join(services["mlflow"]["command"])))
    assert buckets == {bucket.group(1)}
    # Every shopml container reads the profile; the database user is the one postgres creates.
    for name in ("worker", "api"):
        assert services[name]["env_file"] == ["production.env"]
    user = services["postgres"]["environment"]["POSTGRES_USER"]
    assert f"://{user}@postgres" in profile["SHOPML_MONITORING_STORE_URI"]


def test_server_versions_match_shopmls_pins() -> None:
    """The MLflow server image and the Prefect server image are the versions shopml pins."""
    from packaging.requirements import Requirement

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = {r.name: r.specifier for r in (Requirement(d) for group in deps.values() for d in group)}
    mlflow = re.search(r'"mlflow==([\d.]+)"', (DEPLOY / "Dockerfile.mlflow").read_text())
    assert mlflow and mlflow.group(1) in pins["mlflow"], mlflow
    prefect = re.fullmatch(
        r"prefecthq/prefect:([\d.]+)-python3\.11", _compose()["services"]["prefect-server"]["image"]
    )
    assert prefect and prefect.group(1) in pins["prefect"], prefect


def test_prometheus_targets_are_compose_services_on_their_ports() -> None:
    services = _compose()["services"]
    dockerfile = (DEPLOY / "Dockerfile.serve").read_text()
    serve_port = re.search(r"^EXPOSE (\d+)", dockerfile, re.M)
    assert serve_port and f'"--port", "{serve_port.group(1)}"' in dockerfile
    listens = {
        "api": serve_port.group(1),
        "node-exporter": _flag(services["node-exporter"], "web.listen-address").rsplit(":", 1)[1],
    }
    config = _load_yaml(PROMETHEUS / "prometheus.yml")
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"shopml", "shopml-monitor"}
    assert jobs["shopml"].get("metrics_path", "/metrics") == "/metrics"
    assert jobs["shopml"].get("scrape_interval", config["global"]["scrape_interval"]) == "15s"
    seen = set()
    for job in jobs.values():
        for target in (t for sc in job["static_configs"] for t in sc["targets"]):
            host, port = target.rsplit(":", 1)
            assert host in listens, f"{job['job_name']} scrapes {host}, not a compose service"
            assert port == listens[host], f"{target}: {host} listens on {listens[host]}"
            seen.add(host)
    assert seen == set(listens)
    # The prometheus container reads this very file, and the rule files beside it.
    prom = services["prometheus"]
    config_file = _host_path(prom, _flag(prom, "config.file"))
    assert config_file.resolve() == (PROMETHEUS / "prometheus.yml").resolve()
    for rules in config["rule_files"]:
        assert (config_file.parent / rules).is_file(), rules
    assert any(p.endswith(":9090") for p in prom["ports"])


def test_grafana_provisioning_matches_the_folders() -> None:
    services = _compose()["services"]
    grafana = services["grafana"]
    # Grafana reads provisioning from /etc/grafana/provisioning (its default paths.provisioning).
    provisioning = _host_path(grafana, "/etc/grafana/provisioning")
    assert provisioning.resolve() == (GRAFANA / "provisioning").resolve()
    providers = _load_yaml(provisioning / "dashboards/shopml.yml")["providers"]
    assert len(providers) == 1 and providers[0]["type"] == "file"
    folder = _host_path(grafana, providers[0]["options"]["path"])
    assert folder.resolve() == DASHBOARDS.resolve()
    assert sorted(p.name for p in folder.glob("*.json")) == sorted(_dashboards())
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _host_path(grafana, home).is_file()
    # The datasource points at the prometheus service on the port it publishes.
    url = re.fullmatch(r"http://([\w-]+):(\d+)/?", _datasource()["url"])
    assert url and url.group(1) in services
    assert any(p.endswith(f":{url.group(2)}") for p in services[url.group(1)]["ports"])


def test_node_exporter_serves_the_monitors_textfile() -> None:
    services = _compose()["services"]
    node = services["node-exporter"]
    folder = _flag(node, "collector.textfile.directory")
    # write_gauges writes <home>/reports/monitoring/metrics.prom (checked in _monitor_page),
    # in the worker's home, which the node exporter mounts read-only.
    home = _env_file(DEPLOY / "production.env")["SHOPML_HOME"]
    (volume,) = [src for dst, src in _mounts(services["worker"]).items() if dst == home]
    mounted = {dst: src for dst, src in _mounts(node).items() if src == volume}
    assert len(mounted) == 1 and node["volumes"][0].endswith(":ro")
    (at,) = mounted
    assert folder == f"{at}/reports/monitoring"
    assert "9100" in [str(p) for p in node["expose"]]


# -- promtool, when installed ---------------------------------------------------------------------
def _promtool() -> str:
    # On PATH, or where `make test` puts it (beside the interpreter in .venv/bin).
    path = shutil.which("promtool") or shutil.which(
        "promtool", path=os.path.dirname(sys.executable)
    )
    if path is None:
        pytest.skip("promtool is not installed (apt-get install prometheus, or `make test`)")
    return path


def test_promtool_checks_the_config() -> None:
    out = subprocess.run(
        [_promtool(), "check", "config", str(PROMETHEUS / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_runs_the_alert_rule_tests() -> None:
    out = subprocess.run(
        [_promtool(), "test", "rules", "alerts.test.yml"],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each dashboard query, its Grafana variables replaced by sample values, as a recording
    rule: promtool parses them all."""
    samples = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}

    def substitute(expr: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: samples.get(m.group(1), "x"), expr)

    rules = [
        {"record": f"dashboard:query_{i}", "expr": substitute(use.expr)}
        for i, use in enumerate(dashboard_uses())
    ]
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    promtool = _promtool()
    out = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


# -- Kubernetes ----------------------------------------------------------------------------------
KUBE = DEPLOY / "kubernetes"


def _kube() -> dict[str, dict[str, Any]]:
    """kind/name -> object, for every manifest (one object per file)."""
    out = {}
    for path in sorted(KUBE.glob("*.yaml")):
        obj = _load_yaml(path)
        out[f"{obj['kind']}/{obj['metadata']['name']}"] = obj
    return out


def _kustomization() -> dict[str, Any]:
    return dict(_load_yaml(DEPLOY / "kustomization.yaml"))


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return path


def _generated_configmap() -> dict[str, Any]:
    """The ConfigMap kustomize generates from the profile (and its literals)."""
    gen = _kustomization()["configMapGenerator"][0]
    data: dict[str, str] = {}
    for env_file in gen.get("envs", []):
        data.update(_env_file(DEPLOY / env_file))
    for literal in gen.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": gen["name"], "namespace": _kustomization()["namespace"]},
        "data": data,
    }


def test_kubernetes_manifests_validate_against_the_schemas(tmp_path: Path) -> None:
    configmap = tmp_path / "configmap.yaml"
    configmap.write_text(yaml.safe_dump(_generated_configmap()))
    files = [*sorted(str(p) for p in KUBE.glob("*.yaml")), str(configmap)]
    out = subprocess.run(
        [_tool("kubernetes-validate"), "--strict", "--quiet", *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # --strict refuses what the schema does not know (a misspelt field would be ignored).
    broken = _load_yaml(KUBE / "api-deployment.yaml")
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    out = subprocess.run(
        [_tool("kubernetes-validate"), "--strict", "--quiet", str(tmp_path / "broken.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0 and "readinessprobe" in out.stdout + out.stderr


def test_the_kustomization_lists_every_manifest_and_image() -> None:
    k = _kustomization()
    assert sorted(k["resources"]) == sorted(f"kubernetes/{p.name}" for p in KUBE.glob("*.yaml"))
    objects = _kube()
    assert all(
        o["metadata"].get("namespace", k["namespace"]) == k["namespace"]
        for o in objects.values()
        if o["kind"] != "Namespace"
    )
    assert f"Namespace/{k['namespace']}" in objects
    used = {c["image"].split(":")[0] for o in objects.values() for c in _containers(o)}
    assert {i["name"] for i in k["images"]} == used == {"shopml-serve", "shopml-worker"}


def _kustomize_build() -> list[dict[str, Any]]:
    """What `kubectl apply -k deploy/` would send: kustomize's own rendering (the standalone
    binary, or the one built into kubectl; both need no cluster)."""
    if shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(DEPLOY)]
    elif shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(DEPLOY)]
    else:
        pytest.skip("neither kustomize nor kubectl is installed")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return [o for o in yaml.safe_load_all(out.stdout) if o]


def test_kustomize_renders_what_the_tests_read(tmp_path: Path) -> None:
    rendered = _kustomize_build()
    kinds = {f"{o['kind']}/{o['metadata']['name']}": o for o in rendered}
    (configmap,) = [o for o in rendered if o["kind"] == "ConfigMap"]
    # The generated ConfigMap carries a content hash in its name, and every reference to it
    # was rewritten to that name (a new profile rolls the pods).
    assert configmap["metadata"]["name"].startswith("shopml-config-")
    assert configmap["data"] == _generated_configmap()["data"]
    refs = {
        e["configMapRef"]["name"]
        for o in rendered
        for c in _containers(o)
        for e in c.get("envFrom", [])
        if "configMapRef" in e
    }
    assert refs == {configmap["metadata"]["name"]}
    # Every manifest is in, in the namespace, with the images' tags and the common label.
    assert set(kinds) - {f"ConfigMap/{configmap['metadata']['name']}"} == set(_kube())
    k = _kustomization()
    tags = {i["name"]: i["newTag"] for i in k["images"]}
    for o in rendered:
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == k["namespace"], o["metadata"]
        assert o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "shopml"
        for c in _containers(o):
            name, _, tag = c["image"].partition(":")
            assert tag == tags[name], c["image"]
    # And the rendering itself passes the schemas.
    (tmp_path / "rendered.yaml").write_text(yaml.safe_dump_all(rendered))
    out = subprocess.run(
        [_tool("kubernetes-validate"), "--strict", "--quiet", str(tmp_path / "rendered.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return dict(obj["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
        return dict(obj["spec"]["template"]["spec"])
    return {}


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_spec(obj)
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def test_the_api_deployment() -> None:
    objects = _kube()
    api = objects["Deployment/shopml-api"]
    pod = _pod_spec(api)
    (container,) = pod["containers"]
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert api["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # Probes on the service's own routes and port.
    app_source = (ROOT / "src/shopml/serving/app.py").read_text()
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    for route in ("/ready", "/health"):
        assert f'"{route}"' in app_source, route
    command = container["command"]
    assert command[command.index("--port") + 1] == str(port)
    # Rolling updates that never drop below the replicas; resources; not root.
    rolling = api["spec"]["strategy"]
    assert rolling["type"] == "RollingUpdate" and rolling["rollingUpdate"]["maxUnavailable"] == 0
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) & set(
        container["resources"]["limits"]
    )
    assert (
        pod["securityContext"]["runAsNonRoot"] is True
        and pod["securityContext"]["runAsUser"] >= 10000
    )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # The image's user is the pod's user (the home volume is writable by it).
    user = re.findall(r"--uid (\d+)", (DEPLOY / "Dockerfile.serve").read_text())
    assert user == [str(pod["securityContext"]["runAsUser"])]
    # The HPA scales it, the PDB keeps one up, the Service finds its pods on its port.
    hpa = objects["HorizontalPodAutoscaler/shopml-api"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "shopml-api",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = objects["PodDisruptionBudget/shopml-api"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    service = objects["Service/shopml-api"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_the_worker_and_the_monitor_schedule() -> None:
    from shopml.flows.deploy import DEPLOYMENT
    from shopml.settings import Settings

    objects = _kube()
    worker = objects["Deployment/shopml-worker"]
    pod = _pod_spec(worker)
    assert [c["command"] for c in pod["initContainers"]] == [["shopml", "deploy"]]
    assert [c["command"] for c in pod["containers"]] == [["shopml", "worker"]]
    assert worker["spec"]["replicas"] == 1 and worker["spec"]["strategy"]["type"] == "Recreate"
    home = _env_file(DEPLOY / "production.env")["SHOPML_HOME"]
    claim = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert f"PersistentVolumeClaim/{claim['persistentVolumeClaim']['claimName']}" in objects
    for c in _containers(worker):
        assert {"name": claim["name"], "mountPath": home} in c["volumeMounts"]
    # The CronJob starts the monitor deployment; the Prefect server keeps no schedule of its own.
    cron = objects["CronJob/shopml-monitor"]
    assert len(cron["spec"]["schedule"].split()) == 5
    (job,) = _pod_spec(cron)["containers"]
    assert job["command"] == ["prefect", "deployment", "run", f"monitor/{DEPLOYMENT}"]
    config = _generated_configmap()["data"]
    assert config["SHOPML_MONITOR_CRON"] == "" and "PREFECT_API_URL" in config
    assert Settings(monitor_cron=config["SHOPML_MONITOR_CRON"]).monitor_cron == ""


def test_config_and_secret_references() -> None:
    """Every container reads the generated ConfigMap; secrets come from one Secret whose keys
    are the ones deploy/.env documents; nothing secret is in the ConfigMap."""
    name = _generated_configmap()["metadata"]["name"]
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (DEPLOY / ".env.example").read_text(), re.M)
    )
    secrets = set()
    for obj in _kube().values():
        for c in _containers(obj):
            assert {"configMapRef": {"name": name}} in c.get("envFrom", []), c["name"]
            for env in c.get("env", []):
                ref = env["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "shopml-secrets" and ref["key"] == env["name"]
                secrets.add(ref["key"])
    assert secrets and secrets <= documented, secrets - documented
    assert not [k for k in _generated_configmap()["data"] if SECRET.search(k)]


# -- CI workflows --------------------------------------------------------------------------------
WORKFLOWS = ROOT / ".github" / "workflows"


def test_workflows_validate_against_githubs_schema() -> None:
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert {Path(f).name for f in files} == {"ci.yml", "release.yml"}
    out = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _on(workflow: dict[str, Any]) -> Any:
    # YAML 1.1 (PyYAML) reads the key `on` as True.
    return workflow.get("on", workflow.get(True))


def _steps(job: dict[str, Any]) -> str:
    return "\n".join(str(s.get("run", "")) + str(s.get("uses", "")) for s in job.get("steps", []))


def test_ci_lints_type_checks_tests_with_services_and_builds_images() -> None:
    ci = _load_yaml(WORKFLOWS / "ci.yml")
    jobs = ci["jobs"]
    assert "ruff check" in _steps(jobs["lint"]) and "ruff format --check" in _steps(jobs["lint"])
    assert "mypy" in _steps(jobs["type-check"])
    test = jobs["test"]
    assert "make test" in _steps(test)
    services = test["services"]
    # On the ports and with the access tests/support/services.py expects.
    assert (
        "5432:5432" in services["postgres"]["ports"] and "6379:6379" in services["redis"]["ports"]
    )
    assert services["postgres"]["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    built = {(i["context"], i["file"]) for i in jobs["images"]["strategy"]["matrix"]["include"]}
    dockerfiles = {
        f"deploy/{p.name}" for p in DEPLOY.glob("Dockerfile.*") if p.suffix != ".dockerignore"
    }
    assert {f for _, f in built} == dockerfiles
    compose = _compose()["services"]
    for context, file in built:
        svc = next(
            s
            for s in compose.values()
            if "build" in s and _dockerfile(s) == (ROOT / file).resolve()
        )
        assert (DEPLOY / svc["build"]["context"]).resolve() == (ROOT / context).resolve(), file
    assert "workflow_call" in _on(ci)


def test_release_pushes_the_images_after_the_tests() -> None:
    release = _load_yaml(WORKFLOWS / "release.yml")
    assert _on(release)["push"]["tags"]
    jobs = release["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["images"]["needs"] == "test" and jobs["package"]["needs"] == "test"
    ci_images = _load_yaml(WORKFLOWS / "ci.yml")["jobs"]["images"]["strategy"]["matrix"]["include"]
    assert jobs["images"]["strategy"]["matrix"]["include"] == ci_images
    build = [st for st in jobs["images"]["steps"] if "build-push-action" in st.get("uses", "")]
    assert len(build) == 1 and build[0]["with"]["push"] is True
    assert jobs["images"]["permissions"]["packages"] == "write"
    assert release["permissions"] == {"contents": "read"}


# -- checkov: Dockerfiles, Kubernetes, workflows ---------------------------------------------------
@pytest.fixture(scope="module")
def checkov() -> dict[str, Any]:
    """One checkov run over deploy/ and .github/ (its own venv: `make test` makes it)."""
    path = shutil.which("checkov") or (
        str(ROOT / ".venv-tools/bin/checkov")
        if (ROOT / ".venv-tools/bin/checkov").exists()
        else None
    )
    if path is None:
        pytest.skip("checkov is not installed (`make test` installs it into .venv-tools)")
    out = subprocess.run(
        [
            path, "-d", str(DEPLOY), "-d", str(ROOT / ".github"),
            "--framework", "dockerfile", "kubernetes", "github_actions",
            "--skip-download", "--compact", "-o", "json",
        ],
        capture_output=True, text=True, check=False, timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_CREATE_GRAPH": "True"},
    )  # fmt: skip
    # One JSON document per directory scanned (each a report or a list of them): the last
    # report of each framework counts.
    found: dict[str, Any] = {}
    decoder, text, pos = json.JSONDecoder(), out.stdout, 0
    while pos < len(text.rstrip()):
        doc, end = decoder.raw_decode(text, pos)
        for report in doc if isinstance(doc, list) else [doc]:
            found[report["check_type"]] = report
        pos = end + len(text[end:]) - len(text[end:].lstrip())
    assert found, out.stderr[-3000:]
    return found


def test_checkov_finds_nothing_unjustified(checkov: dict[str, Any]) -> None:
    assert set(checkov) == {"dockerfile", "kubernetes", "github_actions"}
    failed = [
        f"{t}: {c['check_id']} {c['file_path']} {c.get('resource')}: {c['check_name']}"
        for t, r in checkov.items()
        for c in r["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    for kind, report in checkov.items():
        assert report["summary"]["passed"] > 20, kind  # it did look
        assert report["summary"]["parsing_errors"] == 0, kind
    # Each suppression says why, in the manifest that carries it.
    for c in checkov["kubernetes"]["results"]["skipped_checks"]:
        reason = c.get("check_result", {}).get("suppress_comment", "")
        assert len(reason) > 20, f"{c['check_id']} in {c['file_path']} is skipped without a reason"
    skipped = {
        (c["check_id"], Path(c["file_path"]).name)
        for r in checkov.values()
        for c in r["results"]["skipped_checks"]
    }
    assert {k for k, _ in skipped} <= {"CKV_K8S_8", "CKV_K8S_35", "CKV_K8S_43"}, skipped
