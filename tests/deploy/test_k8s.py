"""Every k8s overlay renders with `kubectl kustomize` and every manifest validates.

Built-in kinds are checked against the Kubernetes JSON schemas (kubernetes-validate, strict:
unknown fields fail); custom resources (KEDA ScaledObject, Kubeflow TrainJob) have no schema
there, so the fields their controller needs are checked here.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["dev", "gpu-cluster", "kubeflow-trainer"]
CUSTOM_GROUPS = ("keda.sh/", "trainer.kubeflow.org/")  # CRDs: no schema in the validator
QUEUES = {"preprocess", "train", "render"}
GPU_WORKERS = {"train-worker", "render-worker"}
GPU_OVERLAYS = {"gpu-cluster", "kubeflow-trainer"}
KUBERNETES_VERSION = "1.30.0"


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with kustomize) is not installed")
    result = subprocess.run([kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def test_builtin_manifests_validate(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    _, docs = overlay
    for doc in docs:
        if doc["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_validator_rejects_an_unknown_field() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
           "spec": {"ports": [{"port": 80}], "selektor": {}}}

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_everything_lives_in_the_namespace(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "facespeech", doc["metadata"]["name"]


def test_api_probes_and_service(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    container = by_kind(docs, "Deployment")["api"]["spec"]["template"]["spec"]["containers"][0]

    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert by_kind(docs, "Service")["api"]["spec"]["selector"] == {"app.kubernetes.io/name": "api"}
    backend = by_kind(docs, "Ingress")["api"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend["service"]["name"] == "api"
    assert "api" in by_kind(docs, "PodDisruptionBudget")


def test_workers_and_their_gpus(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = overlay
    deployments = by_kind(docs, "Deployment")
    for queue in QUEUES:
        worker = f"{queue}-worker"
        spec = deployments[worker]["spec"]["template"]["spec"]
        container = spec["containers"][0]
        assert container["command"][:4] == ["facespeech", "worker", "--queues", queue]
        assert {"name": "metrics", "containerPort": 9101} in container["ports"]
        assert spec["terminationGracePeriodSeconds"] >= 1800, "a running task must finish"
        gpus = container["resources"].get("limits", {}).get("nvidia.com/gpu")
        if name in GPU_OVERLAYS and worker in GPU_WORKERS:
            assert gpus == 1
            assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
        else:
            assert gpus is None, f"{name}: {worker} must not ask for a GPU"
        assert worker in by_kind(docs, "PodDisruptionBudget")


def test_keda_scales_each_queue_from_redis(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    deployments = by_kind(docs, "Deployment")
    scaled = by_kind(docs, "ScaledObject")

    assert set(scaled) == {f"{queue}-worker" for queue in QUEUES}
    for name, scaled_object in scaled.items():
        assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
        spec = scaled_object["spec"]
        target = spec["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment"
        assert target["name"] in deployments
        # Waiting tasks only are counted: never scale to zero under a running task.
        assert spec["minReplicaCount"] >= 1
        assert spec["maxReplicaCount"] >= spec["minReplicaCount"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "redis"
        metadata = trigger["metadata"]
        assert metadata["listName"] == name.removesuffix("-worker")
        assert metadata.get("address") or metadata.get("addressFromEnv") or metadata.get("host")
        assert int(metadata["listLength"]) >= 1  # KEDA wants strings holding integers
        assert all(isinstance(value, str) for value in metadata.values())


def test_multi_gpu_training_is_an_indexed_torchrun_job() -> None:
    docs = render("gpu-cluster")
    job = by_kind(docs, "Job")["train-ddp"]
    spec = job["spec"]
    pod = spec["template"]["spec"]
    command = pod["containers"][0]["command"]

    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"]
    assert command[0] == "torchrun"
    assert f"--nnodes={spec['completions']}" in command
    assert "--node-rank=$(JOB_COMPLETION_INDEX)" in command
    assert pod["subdomain"] in by_kind(docs, "Service")
    assert by_kind(docs, "Service")[pod["subdomain"]]["spec"]["clusterIP"] == "None"
    gpus = pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert f"--nproc-per-node={gpus}" in command
    claim = next(v for v in pod["volumes"] if v["name"] == "data")["persistentVolumeClaim"]
    assert claim["claimName"] in by_kind(docs, "PersistentVolumeClaim")


def test_kubeflow_trainjob_replaces_the_indexed_job() -> None:
    """The fields Kubeflow Trainer's webhook and torch plugin need, and a volume that exists."""
    docs = render("kubeflow-trainer")
    assert "train-ddp" not in by_kind(docs, "Job") and "train-ddp" not in by_kind(docs, "Service")
    job = by_kind(docs, "TrainJob")["facespeech-train"]
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    spec = job["spec"]
    trainer = spec["trainer"]
    assert spec["runtimeRef"]["name"] == "torch-distributed"
    assert isinstance(trainer["numNodes"], int) and trainer["numNodes"] >= 1
    gpus = trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"]
    assert trainer["numProcPerNode"] == gpus
    command = trainer["command"]
    # the runtime sets nodes, ranks and the rendezvous: none of it is repeated here
    assert command[:2] == ["torchrun", "--no-python"]
    assert not [arg for arg in command if arg.startswith(("--nnodes", "--node-rank", "--master"))]
    override = spec["podTemplateOverrides"][0]
    assert override["targetJobs"] == [{"name": "node"}]
    mounts = {m["name"] for m in override["spec"]["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in override["spec"]["volumes"]}
    assert mounts <= set(volumes)
    claim = volumes["data"]["persistentVolumeClaim"]["claimName"]
    assert claim in by_kind(docs, "PersistentVolumeClaim")
