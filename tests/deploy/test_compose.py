"""deploy/docker-compose.yml: each worker has its own state volume and a /healthz healthcheck,
and every setting the stack passes is one the connector reads.

No container engine runs here: the file is read as YAML (anchors and merge keys resolved as
Compose does) and checked for what Compose and the connector need.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.settings_env import PREFIX, known_names, settings_from

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
WORKERS = {
    name: service for name, service in SERVICES.items() if service.get("command") == ["worker"]
}
BATCHBRIDGE = {name: s for name, s in SERVICES.items() if "batchbridge" in s.get("image", "")}


def interpolated(value: Any) -> str:
    """A Compose value with ``${VAR:-default}`` replaced by its default (VAR unset)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def env_file(name: str) -> dict[str, str]:
    lines = (DEPLOY / name).read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def environment(service: dict[str, Any], provider_file: str = "emulator.env") -> dict[str, str]:
    """What the service's process gets: its env file (the emulator's by default) and environment."""
    env = env_file(provider_file) if service.get("env_file") else {}
    env.update({key: interpolated(value) for key, value in service.get("environment", {}).items()})
    return env


def test_there_are_two_workers():
    assert sorted(WORKERS) == ["worker-1", "worker-2"]


@pytest.mark.parametrize("name", ["worker-1", "worker-2"])
def test_each_worker_mounts_its_own_named_volume_at_the_data_dir(name):
    worker = WORKERS[name]
    data_dir = worker["environment"]["BATCHBRIDGE_DATA_DIR"]
    mounts = {target: source for source, target in (v.split(":")[:2] for v in worker["volumes"])}
    assert mounts[data_dir] in COMPOSE["volumes"]
    others = {
        v.split(":")[0] for other, w in WORKERS.items() if other != name for v in w["volumes"]
    }
    assert mounts[data_dir] not in others


def test_only_workers_keep_state():
    """The one-off cli container shares the workers' settings but never their volumes."""
    assert "volumes" not in SERVICES["cli"]
    assert SERVICES["cli"]["profiles"] == ["tools"]


@pytest.mark.parametrize("name", ["worker-1", "worker-2"])
def test_worker_healthcheck_calls_healthz_on_the_metrics_port(name, monkeypatch):
    worker = WORKERS[name]
    settings = settings_from(environment(worker), monkeypatch)
    probe = " ".join(worker["healthcheck"]["test"])
    assert f"http://127.0.0.1:{settings.metrics_port}/healthz" in probe
    assert settings.metrics_host == "0.0.0.0"
    assert str(settings.metrics_port) in worker["expose"]
    assert worker["stop_grace_period"] == "60s"


def test_prometheus_finds_every_worker_by_its_alias():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "batchbridge-worker")
    [discovery] = job["dns_sd_configs"]
    for worker in WORKERS.values():
        assert set(discovery["names"]) <= set(worker["networks"]["default"]["aliases"])
        assert int(worker["environment"]["BATCHBRIDGE_METRICS_PORT"]) == discovery["port"]
    assert set(SERVICES["prometheus"]["depends_on"]) == set(WORKERS)


@pytest.mark.parametrize("name", sorted(BATCHBRIDGE))
def test_every_batchbridge_variable_is_a_real_setting(name, monkeypatch):
    env = environment(BATCHBRIDGE[name])
    assert sorted(k for k in env if k.startswith(PREFIX) and k not in known_names()) == []
    settings_from(env, monkeypatch)


@pytest.mark.parametrize("path", ["emulator.env", "secrets/providers.env.example"])
def test_provider_env_files_name_real_settings(path):
    names = set(env_file(path))
    assert names and names <= known_names()


def test_every_named_volume_is_declared():
    used = {
        v.split(":")[0]
        for service in SERVICES.values()
        for v in service.get("volumes", [])
        if not v.startswith((".", "/"))
    }
    assert used == set(COMPOSE["volumes"])
