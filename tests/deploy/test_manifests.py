"""The Kubernetes manifests (deploy/k8s, deploy/serving) parse, render and agree with the code.

No cluster runs here: the overlays are rendered with ``kubectl kustomize`` (offline, client side)
when kubectl is installed, and every check reads the rendered objects. Nothing is applied, so
scheduling, volumes binding and images pulling are not proven here (docs/deploy.md).
"""

from __future__ import annotations

import shutil
import subprocess
import types
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from service import event_log, routes, settings
from serving import model_server
from shoprec import config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("local", "production")
KUBECTL = shutil.which("kubectl")
OUT_OF_BAND_SECRETS = {"production": {"shoprec-service-api-keys"}}  # created by the operator
SERVICE_APP = "shoprec-service"
MODEL_SERVER = "shoprec-serving"
REDIS = "shoprec-redis"
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_parses(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents, f"{path} is empty"
    for document in documents:
        assert isinstance(document, dict)
        if path.name != "docker-compose.yaml":
            assert document.get("apiVersion") and document.get("kind"), path


def _kustomizations() -> list[Path]:
    return sorted(DEPLOY.rglob("kustomization.yaml"))


@pytest.mark.parametrize("path", _kustomizations(), ids=lambda p: str(p.parent.relative_to(DEPLOY)))
def test_kustomization_references_exist(path: Path) -> None:
    kustomization = yaml.safe_load(path.read_text())
    folder = path.parent
    for resource in kustomization.get("resources", []):
        target = folder / resource
        assert target.is_file() or (target / "kustomization.yaml").is_file(), \
            f"{path}: resource {resource} is neither a file nor a kustomization"
    for patch in kustomization.get("patches", []):
        assert (folder / patch["path"]).is_file(), f"{path}: patch {patch['path']} missing"
    for generator in kustomization.get("configMapGenerator", []):
        for name in generator.get("files", []):
            assert (folder / name.split("=")[-1]).is_file(), f"{path}: {name} missing"


def test_every_overlay_includes_the_base_and_the_base_the_model_server() -> None:
    base = yaml.safe_load((DEPLOY / "k8s" / "base" / "kustomization.yaml").read_text())
    assert (DEPLOY / "k8s" / "base" / "../../serving").resolve() == DEPLOY / "serving"
    assert "../../serving" in base["resources"]
    for overlay in OVERLAYS:
        kustomization = yaml.safe_load(
            (DEPLOY / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text())
        assert "../../base" in kustomization["resources"]
        assert kustomization["namespace"]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: the overlays cannot be rendered here")
    result = subprocess.run([KUBECTL, "kustomize", str(DEPLOY / "k8s" / "overlays" / request.param)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return request.param, [d for d in yaml.safe_load_all(result.stdout) if d]


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def _container(workload: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    if name is None:
        (only,) = containers
        return only
    (named,) = [c for c in containers if c["name"] == name]
    return named


def _flag(args: list[str], name: str) -> str:
    values = [arg.split("=", 1)[1] for arg in args if arg.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name} given {len(values)} times in {args}"
    return values[0]


def _service_port(objects: list[dict[str, Any]], service: str, port_name: str) -> int:
    ports = {p["name"]: p["port"] for p in _one(objects, "Service", service)["spec"]["ports"]}
    return ports[port_name]


def test_services_select_one_workload_and_name_its_ports(rendered) -> None:
    _, objects = rendered
    workloads = [o for o in objects if o["kind"] in WORKLOAD_KINDS]
    for service in (o for o in objects if o["kind"] == "Service"):
        selector = service["spec"]["selector"]
        matched = [w for w in workloads
                   if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matched) == 1, f"Service {service['metadata']['name']} selects {len(matched)}"
        container_ports = {p["name"]: p["containerPort"] for c in
                           matched[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports, (service["metadata"]["name"], port)
    for workload in workloads:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_volumes_configmaps_and_secrets_exist(rendered) -> None:
    overlay, objects = rendered
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for workload in (o for o in objects if o["kind"] in WORKLOAD_KINDS):
        claims_templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        pod = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claims_templates, mount
            for env in container.get("env", []):
                secret = env.get("valueFrom", {}).get("secretKeyRef")
                if secret and secret["name"] not in OUT_OF_BAND_SECRETS.get(overlay, set()):
                    assert ("Secret", secret["name"]) in names, secret
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names


def test_namespace_and_images_are_pinned(rendered) -> None:
    overlay, objects = rendered
    namespace = _one(objects, "Namespace", "shoprec-dev" if overlay == "local" else "shoprec")
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace["metadata"]["name"], obj["metadata"]
    for workload in (o for o in objects if o["kind"] in WORKLOAD_KINDS):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image


def _route_paths() -> set[str]:
    """The paths the service's router really serves (built without starting the service)."""
    stub = types.SimpleNamespace(settings=None, service=None, metrics=None, auth=None)
    return {route.path for route in routes.build_router(stub).routes}


def test_recommendation_service_flags_ports_and_probes_match_the_code(rendered) -> None:
    _, objects = rendered
    deployment = _one(objects, "Deployment", SERVICE_APP)
    container = _container(deployment)
    parsed = settings.build_parser().parse_args(container["args"])
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert parsed.port == port == settings.build_parser().get_default("port")
    assert parsed.host == "0.0.0.0" and parsed.host not in settings.LOOPBACK_HOSTS
    assert parsed.model_name == config.MODEL_NAME
    model_url = urllib.parse.urlsplit(parsed.model_url)
    assert (model_url.scheme, model_url.hostname) == ("http", MODEL_SERVER)
    assert model_url.port == _service_port(objects, MODEL_SERVER, "http") == \
        model_server.DEFAULT_REST_API_PORT
    redis_port = _service_port(objects, REDIS, "redis")
    for url in (parsed.redis_url, parsed.event_log):  # several replicas share both, in Redis
        assert url.startswith(event_log.REDIS_SCHEMES), url
        split = urllib.parse.urlsplit(url)
        assert (split.hostname, split.port) == (REDIS, redis_port)
    assert urllib.parse.urlsplit(parsed.redis_url).path != urllib.parse.urlsplit(parsed.event_log).path
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert parsed.data_dir == mounts["data"]
    assert settings.API_KEY_ENV in {env["name"] for env in container["env"]}
    served = _route_paths()
    assert "/healthz" in served
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in served
        assert container[probe]["httpGet"]["port"] == "http"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in served and int(annotations["prometheus.io/port"]) == port
    assert "requests" in container["resources"] and container["resources"]["requests"]["cpu"]


def test_autoscaler_targets_the_service_and_brackets_its_replicas(rendered) -> None:
    _, objects = rendered
    (hpa,) = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    deployment = _one(objects, target["kind"], target["name"])
    assert target["name"] == SERVICE_APP
    assert 1 <= hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert _container(deployment)["resources"]["requests"]["cpu"]  # utilisation needs a request
    (budget,) = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= \
        deployment["spec"]["template"]["metadata"]["labels"].items()
    assert budget["spec"]["minAvailable"] < hpa["spec"]["minReplicas"] or hpa["spec"]["minReplicas"] == 1


def test_model_server_is_real_tf_serving_serving_the_retrieval_model(rendered) -> None:
    _, objects = rendered
    deployment = _one(objects, "Deployment", MODEL_SERVER)
    container = _container(deployment, "tensorflow-serving")
    assert container["image"].startswith("tensorflow/serving:")
    assert container["command"] == ["tensorflow_model_server"]
    # Real TF Serving listens on every interface and has no --bind_address (that flag is the
    # local stand-in's only); the stand-in parses the same arguments (test_serving_config.py).
    assert not any(arg.startswith("--bind_address") for arg in container["args"])
    assert container["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{config.MODEL_NAME}"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    config_map = _one(objects, "ConfigMap", volumes["config"]["configMap"]["name"])
    assert f'name: "{config.MODEL_NAME}"' in config_map["data"]["models.config"]


def test_redis_persists_every_write_and_serves_the_port_the_service_uses(rendered) -> None:
    _, objects = rendered
    statefulset = _one(objects, "StatefulSet", REDIS)
    container = _container(statefulset)
    conf_path = container["command"][1]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    config_map = _one(objects, "ConfigMap", volumes[mounts[str(Path(conf_path).parent)]]["configMap"]["name"])
    conf = dict(line.split(None, 1) for line in config_map["data"][Path(conf_path).name].splitlines()
                if line.strip() and not line.startswith("#"))
    assert conf["appendonly"] == "yes" and conf["appendfsync"] == "always"
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["bind"] == "0.0.0.0"
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["redis"]
    assert int(conf["port"]) == port == _service_port(objects, REDIS, "redis")
    assert mounts[conf["dir"]] == "data"  # the AOF lives on the claim
    assert {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]} == {"data"}
