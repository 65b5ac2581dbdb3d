"""The Grafana dashboard and its provisioning: their structure, and the queries its panels send."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from celerykit_testing.dashboard import dashboard_queries, known_series, load_dashboard, panels, regex, series_in

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "src" / "celerykit" / "share" / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "celerykit.json").read_text(encoding="utf-8"))
PANELS = list(panels(DASHBOARD))
TARGETS = [(panel["title"], target) for panel in PANELS for target in panel.get("targets", [])]
VARIABLES = {variable["name"]: variable for variable in DASHBOARD["templating"]["list"]}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
QUERY_VARIABLES = {
    "pool": "label_values(celerykit_pool_workers_online, pool)",
    "queue": "label_values(celerykit_queue_messages, queue)",
    "task": "label_values(flower_events_total, task)",
}
# A panel reading series with one of these labels offers the variable of the same name.
FILTERS = {
    "pool": ("flower_", "celerykit_pool_"),
    "queue": ("celerykit_queue_",),
    "task": ("flower_events_total", "flower_task_"),
}


def test_the_dashboard_is_the_package_s_and_has_its_uid_and_schema():
    assert load_dashboard() == DASHBOARD
    assert DASHBOARD["uid"] == "celerykit"
    assert DASHBOARD["schemaVersion"] == 39
    assert DASHBOARD.get("id") is None  # provisioned: Grafana gives the id


def test_the_data_source_is_a_variable_of_prometheus_sources():
    variable = VARIABLES["datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")


@pytest.mark.parametrize(("name", "query"), QUERY_VARIABLES.items())
def test_query_variables_offer_every_value_and_several(name, query):
    variable = VARIABLES[name]
    assert variable["type"] == "query"
    assert variable["datasource"] == DATASOURCE
    assert variable["definition"] == query
    assert (variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]) == query
    assert variable["multi"] is True
    assert variable["includeAll"] is True


def test_panel_titles_and_ids_are_unique():
    titles = [panel["title"] for panel in PANELS]
    ids = [panel["id"] for panel in PANELS]
    assert len(titles) == len(set(titles))
    assert len(ids) == len(set(ids))


def test_panels_do_not_overlap():
    taken: dict[tuple[int, int], str] = {}
    for panel in PANELS:
        box = panel["gridPos"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]
        assert box["x"] + box["w"] <= 24


@pytest.mark.parametrize("panel", PANELS, ids=lambda panel: panel["title"])
def test_every_panel_queries_prometheus_through_the_variable(panel):
    assert panel["type"] == "timeseries"
    assert panel["datasource"] == DATASOURCE
    assert panel["targets"]
    for target in panel["targets"]:
        assert target.get("expr"), f"{panel['title']}: target {target.get('refId')} has no expr"
        assert target["datasource"] == DATASOURCE


@pytest.mark.parametrize(("title", "target"), TARGETS, ids=[f"{title}/{t['refId']}" for title, t in TARGETS])
def test_every_query_reads_known_series_and_filters_by_the_variables(title, target):
    names = series_in(target["expr"])
    assert names, f"{title}: reads none of the kit's or Flower's series"
    assert names <= known_series()
    for variable, prefixes in FILTERS.items():
        if any(name.startswith(prefixes) for name in names):
            assert f'{variable}=~"${variable}"' in target["expr"], f"{title}: not filtered by ${variable}"


def test_the_panels_the_kit_promises_are_there():
    exprs = "\n".join(target["expr"] for _, target in TARGETS)
    for needle in (
        'type="task-succeeded"',
        'type="task-failed"',
        'type="task-retried"',
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "flower_task_runtime_seconds_bucket",
        "celerykit_queue_messages",
        "celerykit_queue_unacked_messages",
        "celerykit_pool_workers_online",
        "flower_worker_number_of_currently_executing_tasks",
        "flower_worker_prefetched_tasks",
        "celerykit_redis_memory_used_bytes",
        "celerykit_redis_memory_max_bytes",
    ):
        assert needle in exprs


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed: apt-get install --no-install-recommends prometheus (Debian's package)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_every_substituted_query_is_valid_promql(tmp_path):
    """Each query, as Prometheus gets it, as a recording rule: promtool parses them all."""
    rules = [{"record": f"celerykit:panel_{n}", "expr": expr} for n, (_, expr) in enumerate(dashboard_queries())]
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", "queries.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# The substitution (celerykit_testing.dashboard) -------------------------------------------------


def test_queries_leave_no_variable_and_take_all_by_default():
    queries = dashboard_queries()
    assert len(queries) == len(TARGETS)
    assert {title for title, _ in queries} == {panel["title"] for panel in PANELS}
    for title, expr in queries:
        assert "$" not in expr and "[[" not in expr, f"{title}: {expr}"
    throughput = next(expr for title, expr in queries if title == "Throughput per pool and task")
    assert 'pool=~".*"' in throughput
    assert 'task=~".*"' in throughput
    assert "[1m]" in throughput  # $__rate_interval


def test_given_values_replace_the_variables():
    queries = dashboard_queries({"pool": "high|low", "queue": "default", "task": regex(["celerykit.demo.report"])})
    exprs = "\n".join(expr for _, expr in queries)
    assert 'pool=~"high|low"' in exprs
    assert 'queue=~"default"' in exprs
    assert r'task=~"celerykit\.demo\.report"' in exprs
    assert '=~".*"' not in exprs


def test_every_grafana_variable_syntax_is_substituted_and_rows_are_walked():
    board = {
        "templating": {"list": [{"name": "pool", "includeAll": True, "allValue": ".*"}, {"name": "queue"}]},
        "panels": [
            {"title": "plain", "targets": [{"expr": 'x{pool=~"$pool"}[$__rate_interval]'}]},
            {"type": "row", "title": "row", "panels": [{"title": "nested", "targets": [{"expr": 'x{q=~"${queue}"}'}]}]},
            {"title": "formats", "targets": [{"expr": 'x{a=~"${pool:regex}", b=~"[[queue]]"}[$__interval]'}, {}]},
        ],
    }
    assert dashboard_queries({"queue": "a|b"}, board) == [
        ("plain", 'x{pool=~".*"}[1m]'),
        ("nested", 'x{q=~"a|b"}'),
        ("formats", 'x{a=~".*", b=~"a|b"}[1m]'),
    ]


def test_a_variable_the_dashboard_does_not_define_fails():
    board = {"panels": [{"title": "typo", "targets": [{"expr": 'x{pool=~"$pol"}'}]}]}
    with pytest.raises(KeyError, match="pol"):
        dashboard_queries({}, board)


def test_regex_escapes_each_value():
    assert regex(["high", "low"]) == "high|low"
    assert regex(["celerykit.demo.report"]) == r"celerykit\.demo\.report"


# Provisioning -----------------------------------------------------------------------------------


def test_the_datasource_is_prometheus_at_the_url_from_the_environment():
    provisioning = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "celerykit.yml").read_text())
    assert provisioning["apiVersion"] == 1
    (source,) = provisioning["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "$CELERYKIT_PROMETHEUS_URL"
    assert source["uid"] == VARIABLES["datasource"]["current"]["value"]


def test_the_dashboards_come_from_the_celerykit_directory():
    provisioning = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "celerykit.yml").read_text())
    assert provisioning["apiVersion"] == 1
    (provider,) = provisioning["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/celerykit"
