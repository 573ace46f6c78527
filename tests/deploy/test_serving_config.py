"""deploy/serving (real TF Serving: configs, Deployment, Service, compose) agrees with the code.

The container flags are also parsed by the local server's own flag parser, so the same command
line runs on both servers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from serving import metrics, model_server
from serving.model_config import (
    parse_batching_parameters,
    parse_prometheus_path,
    read_model_config_file,
)
from shoprec import config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "serving"
CONFIG_MOUNT = "/config"
MODELS_MOUNT = "/models"


def _load(name: str) -> dict[str, Any]:
    documents = list(yaml.safe_load_all((DEPLOY / name).read_text()))
    assert len(documents) == 1
    return documents[0]


@pytest.fixture(scope="module")
def container() -> dict[str, Any]:
    deployment = _load("deployment.yaml")
    (only_container,) = deployment["spec"]["template"]["spec"]["containers"]
    return only_container


def _flag(args: list[str], name: str) -> str:
    values = [arg.split("=", 1)[1] for arg in args if arg.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name} given {len(values)} times"
    return values[0]


def test_deployment_ports_probe_and_mounts_match_the_code(container: dict[str, Any]) -> None:
    deployment = _load("deployment.yaml")
    assert container["image"].startswith("tensorflow/serving:")
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": model_server.DEFAULT_GRPC_PORT, "http": model_server.DEFAULT_REST_API_PORT}
    args = container["args"]
    assert int(_flag(args, "port")) == ports["grpc"]
    assert int(_flag(args, "rest_api_port")) == ports["http"]
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == f"/v1/models/{config.MODEL_NAME}"
    assert ports[probe["port"]] == model_server.DEFAULT_REST_API_PORT
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts == {"models": MODELS_MOUNT, "config": CONFIG_MOUNT}
    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["readOnly"] is True
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == metrics.PROMETHEUS_PATH
    assert int(annotations["prometheus.io/port"]) == ports["http"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_service_exposes_both_apis(container: dict[str, Any]) -> None:
    service = _load("service.yaml")
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    container_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for name in ("grpc", "http"):
        assert ports[name]["targetPort"] == name
        assert ports[name]["port"] == container_ports[name]
    labels = _load("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_config_files_are_the_ones_the_flags_name(container: dict[str, Any]) -> None:
    args = container["args"]
    kustomization = _load("kustomization.yaml")
    assert set(kustomization["resources"]) == {"deployment.yaml", "service.yaml"}
    (generator,) = kustomization["configMapGenerator"]
    volumes = {volume["name"]: volume for volume in _load("deployment.yaml")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == generator["name"]
    for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        path = Path(_flag(args, flag))
        assert str(path.parent) == CONFIG_MOUNT
        assert path.name in generator["files"]
        assert (DEPLOY / path.name).is_file()


def test_models_config_points_at_the_mounted_models(container: dict[str, Any]) -> None:
    retrieval, ranking = read_model_config_file(str(DEPLOY / "models.config"))
    for model, name in ((retrieval, config.MODEL_NAME), (ranking, config.RANKING_MODEL_NAME)):
        assert model.name == name
        assert model.base_path == f"{MODELS_MOUNT}/{name}"
        assert model.version_policy.kind == "latest"


def test_a_ranking_request_fits_one_batch() -> None:
    batching = parse_batching_parameters((DEPLOY / "batching_parameters.txt").read_text())
    assert batching.max_batch_size >= config.RANKING_CANDIDATES


def test_batching_and_monitoring_files_parse() -> None:
    batching = parse_batching_parameters((DEPLOY / "batching_parameters.txt").read_text())
    assert batching.max_batch_size >= 1 and batching.batch_timeout_micros > 0
    assert parse_prometheus_path((DEPLOY / "monitoring.config").read_text()) == metrics.PROMETHEUS_PATH


def test_the_local_server_accepts_the_container_flags(container: dict[str, Any]) -> None:
    args = [arg.replace(CONFIG_MOUNT + "/", str(DEPLOY) + "/") for arg in container["args"]]
    parsed = model_server.parse_flags(args)
    assert parsed.enable_batching is True
    assert parsed.model_config_file == str(DEPLOY / "models.config")


def test_compose_runs_tf_serving_like_kubernetes(container: dict[str, Any]) -> None:
    compose = _load("docker-compose.yaml")
    (service,) = compose["services"].values()
    assert service["image"] == container["image"]
    assert service["entrypoint"] == container["command"]
    assert service["command"] == container["args"]
    assert set(service["ports"]) == {
        f"{model_server.DEFAULT_GRPC_PORT}:{model_server.DEFAULT_GRPC_PORT}",
        f"{model_server.DEFAULT_REST_API_PORT}:{model_server.DEFAULT_REST_API_PORT}",
    }
    mounts = {volume.rsplit(":", 2)[1] for volume in service["volumes"]}  # source:target:ro
    assert MODELS_MOUNT in mounts
    for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        assert _flag(service["command"], flag) in mounts
