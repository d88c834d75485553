"""The Grafana dashboard is well formed for provisioning: its panels use the provisioned Prometheus datasource.

Whether each panel's query has data is proven against a real Prometheus in
tests/integration/test_observability.py."""

from __future__ import annotations

import json

import yaml

from app.settings import REPO_ROOT

GRAFANA = REPO_ROOT / "ops" / "grafana"


def test_every_panel_queries_the_provisioned_prometheus_datasource_and_ids_are_unique():
    dashboard = json.loads((GRAFANA / "dashboards" / "wallet.json").read_text())
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {source["uid"] for source in datasources["datasources"] if source["type"] == "prometheus"}
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert dashboard["uid"] and len(panels) >= 15
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": target["datasource"]["uid"]}
            assert target["datasource"]["uid"] in uids, f"panel {panel['title']!r} uses an unprovisioned datasource"
