"""The deployment files validate without a container runtime: the compose
file against the compose-spec JSON schema (as vendored by check-jsonschema),
the Kubernetes manifests against the Kubernetes API's JSON schemas
(kubernetes-validate, strict), the Dockerfile's instructions; and every node
config they start passes praxis's own config validation with the
environment the image and the workload give it."""

from __future__ import annotations

import importlib.resources
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from praxis_grpc.config import load_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.30"
ROLES = {"orchestrator", "agent-1", "agent-2", "worker-analytics", "worker-filesystem"}


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the final stage's lines, continuations joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    stages = [i for i, (op, _) in enumerate(dockerfile()) if op == "FROM"]
    for op, args in dockerfile()[stages[-1] :]:
        if op == "ENV":
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                env[key] = value
    return {k: v for k, v in env.items() if k.startswith("PRAXIS_")}


def config_file(container_path: str) -> Path:
    """The repository file the image puts at ``container_path``."""
    assert container_path.startswith("/etc/praxis/")
    return ROOT / "configs" / container_path.removeprefix("/etc/praxis/")


def test_dockerfile_runs_a_non_root_node_with_a_grpc_healthcheck() -> None:
    instructions = dockerfile()
    froms = [args for op, args in instructions if op == "FROM"]
    assert froms[-1] == "python:3.11-slim"
    users = [args for op, args in instructions if op == "USER"]
    assert users
    assert users[-1] not in {"root", "0"}
    (healthcheck,) = [args for op, args in instructions if op == "HEALTHCHECK"]
    assert '"praxis_grpc.container", "health"' in healthcheck
    for op, args in instructions:
        if op == "COPY" and "--from" not in args:
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), source
    (cmd,) = [json.loads(args) for op, args in instructions if op == "CMD"]
    assert cmd[:2] == ["node", "--config"]
    assert config_file(cmd[2]).is_file()


def test_image_environment_overrides_are_valid_config(tmp_path: Path) -> None:
    env = image_env()
    assert env["PRAXIS_API__HOST"] == "0.0.0.0"
    config = load_config(ROOT / "configs" / "orchestrator.yaml", environ=env)
    assert (config.api.port, config.metrics.port, config.p2p.port) == (50051, 9464, 4001)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_file_matches_the_compose_spec() -> None:
    schema = json.loads(
        importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    jsonschema.validate(compose(), schema, cls=jsonschema.Draft7Validator)
    assert set(compose()["services"]) == {*ROLES, "prometheus"}


def test_compose_nodes_start_valid_configs_and_prometheus_scrapes_them(tmp_path: Path) -> None:
    services = compose()["services"]
    for name in ROLES:
        service = services[name]
        argv = [*service.get("entrypoint", ["praxis"]), *service["command"]]
        if argv[:4] == ["python", "-m", "praxis_grpc.container", "join"]:
            assert argv[4] == "orchestrator:50051"
            argv = argv[6:]
        assert argv[:3] == ["praxis", "node", "--config"]
        env = {**image_env(), **service.get("environment", {})}
        assert env["PRAXIS_API__ADVERTISE_HOST"] == name
        config = load_config(config_file(argv[3]), environ=env)
        assert config.metrics.port == 9464
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    (static,) = job["static_configs"]
    assert set(static["targets"]) == {f"{name}:9464" for name in ROLES}


def manifests(*paths: Path) -> list[dict[str, Any]]:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


K8S_FILES = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: str(p.relative_to(K8S)))
def test_kubernetes_manifests_match_the_api_schemas(path: Path) -> None:
    for doc in manifests(path):
        if path.parent.name == "etcd":  # a strategic-merge patch: a full ConfigMap here
            assert doc["kind"] == "ConfigMap"
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomizations_name_files_that_exist() -> None:
    for kustomization in K8S.rglob("kustomization.yaml"):
        data = yaml.safe_load(kustomization.read_text())
        for entry in [
            *data.get("resources", []),
            *(p.get("path") for p in data.get("patches", [])),
        ]:
            if entry:
                assert (kustomization.parent / entry).exists(), entry


def pod_env(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The container's PRAXIS_* environment as a pod named ``pod_name`` sees it."""
    values = {"POD_NAME": pod_name, "POD_IP": "10.1.2.3"}
    env = dict(image_env())
    for var in container.get("env", []):
        if "value" in var:
            value = re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], var["value"])
        elif "secretKeyRef" in var["valueFrom"]:
            value = "a-secret-from-the-cluster"
        else:
            continue
        values[var["name"]] = value
        if var["name"].startswith("PRAXIS_"):
            env[var["name"]] = value
    return env


def workloads() -> list[dict[str, Any]]:
    docs = manifests(K8S / "raft-statefulset.yaml", K8S / "workers.yaml")
    return [d for d in docs if d["kind"] in {"StatefulSet", "Deployment"}]


@pytest.mark.parametrize("backend", ["raft", "etcd"])
def test_kubernetes_pods_start_valid_configs_with_grpc_probes(backend: str, tmp_path: Path) -> None:
    (configmap,) = manifests(K8S / "configmap.yaml")
    data = dict(configmap["data"])
    if backend == "etcd":
        (patch,) = manifests(K8S / "etcd" / "configmap-etcd.yaml")
        data.update(patch["data"])
    kinds = set()
    for workload in workloads():
        kinds.add(workload["kind"])
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        command = container["command"]
        assert command[:4] == ["python", "-m", "praxis_grpc.container", "join"]
        assert command[4] == "praxis-raft-0.praxis-raft:50051"
        assert command[6:9] == ["praxis", "node", "--config"]
        name = command[9].removeprefix("/etc/praxis/")
        path = tmp_path / name
        path.write_text(data[name])
        env = pod_env(container, f"{workload['metadata']['name']}-0")
        if backend == "etcd":
            env = {k: v for k, v in env.items() if "RAFT" not in k}
        config = load_config(path, environ=env)
        assert config.api.port == 50051
        assert config.p2p.host == "10.1.2.3"
        if workload["kind"] == "StatefulSet":
            assert config.ha.mode == "active-passive"
            assert config.ha.consensus.backend == backend
            assert workload["spec"]["serviceName"] == "praxis-raft"
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == 50051
    assert kinds == {"StatefulSet", "Deployment"}


def test_the_etcd_overlay_removes_exactly_the_raft_variables() -> None:
    (statefulset,) = [w for w in workloads() if w["kind"] == "StatefulSet"]
    env = statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
    kustomization = yaml.safe_load((K8S / "etcd" / "kustomization.yaml").read_text())
    (json_patch,) = [p for p in kustomization["patches"] if "patch" in p]
    removed = [int(op["path"].rsplit("/", 1)[1]) for op in yaml.safe_load(json_patch["patch"])]
    assert sorted(env[i]["name"] for i in removed) == [
        "PRAXIS_HA__CONSENSUS__RAFT__ADDRESS",
        "PRAXIS_HA__CONSENSUS__RAFT__SECRET",
    ]
    assert removed == sorted(removed, reverse=True)  # later indexes first
