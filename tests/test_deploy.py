"""deploy/ stays usable: its YAML parses and its splitway configs pass ``splitway check``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def check(path: Path) -> subprocess.CompletedProcess[str]:
    # --no-files: the tokens files these configs name exist only on the servers
    return subprocess.run([sys.executable, "-m", "proxy", "check", "--no-files", "-c", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_example_config_passes_check() -> None:
    result = check(DEPLOY / "splitway.example.yaml")
    assert result.returncode == 0, result.stderr


def test_kubernetes_manifests_parse_and_embed_a_valid_config(tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "sidecar.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment", "Service"]
    embedded = tmp_path / "splitway.yaml"
    embedded.write_text(docs[0]["data"]["splitway.yaml"])
    result = check(embedded)
    assert result.returncode == 0, result.stderr
    probes = docs[1]["spec"]["template"]["spec"]["containers"][0]
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_prometheus_files_parse_and_name_real_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    for metric in ("splitway_rollbacks_total", "splitway_requests_total",
                   "splitway_shadow_requests_total"):
        assert metric in exprs
    assert yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]


def test_dockerfile_and_unit_use_real_commands() -> None:
    docker = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["splitway"]' in docker and "/healthz" in docker
    unit = (DEPLOY / "systemd" / "splitway.service").read_text()
    assert "splitway run -c" in unit and "kill -HUP" in unit
