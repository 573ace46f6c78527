"""The two Dockerfiles agree with the code: base images, lock files, paths, commands and ports.

No Docker daemon runs here, so nothing is built: the files are parsed and compared with the
project (the versions installed from the lock, the Kubeflow runner's image paths, the service's
flags, routes and import closure). docs/deploy.md says how to build them for real.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
import types
import urllib.parse
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from pipeline import kubeflow_runner
from service import routes, settings

ROOT = Path(__file__).resolve().parents[2]
PIPELINE_DOCKERFILE = ROOT / "Dockerfile"
SERVICE_DOCKERFILE = ROOT / "Dockerfile.service"
SERVICE_REQUIREMENTS = ROOT / "deploy" / "images" / "service-requirements.txt"
KFP_EXECUTOR_MODULE = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, arguments = text.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, f"{path} ends inside a continued line"
    return instructions


def _all(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in instructions if kw == keyword]


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (kw, _) in enumerate(instructions) if kw == "FROM"]
    return instructions[starts[-1]:]


def _env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _all(instructions, "ENV"):
        for pair in shlex.split(args):
            name, _, value = pair.partition("=")
            env[name] = value.replace("$PATH", env.get("PATH", "$PATH"))
    return env


def _exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list), f"not the exec (JSON) form: {text}"
    return value


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def _ignored(relative: str) -> bool:
    for pattern in _dockerignore():
        bare = pattern.removeprefix("**/")
        parts = relative.split("/")
        if any(fnmatch.fnmatch("/".join(parts[:n]), pattern) for n in range(1, len(parts) + 1)):
            return True
        if any(fnmatch.fnmatch(part, bare) for part in parts):
            return True
    return False


def _copy_sources(instructions: list[tuple[str, str]]) -> list[str]:
    sources = []
    for args in _all(instructions, "COPY"):
        if args.startswith("--from="):
            continue
        sources.extend(shlex.split(args)[:-1])
    return sources


# --- the pipeline image --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pipeline_image() -> list[tuple[str, str]]:
    return parse_dockerfile(PIPELINE_DOCKERFILE)


def test_pipeline_image_is_tfx_with_the_installed_versions(pipeline_image) -> None:
    froms = _all(pipeline_image, "FROM")
    final = froms[-1].split()[0]
    assert final == f"tensorflow/tfx:{importlib.metadata.version('tfx')}" == "tensorflow/tfx:1.16.0"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    beam = f"apache/beam_python{python}_sdk:{importlib.metadata.version('apache-beam')}"
    assert f"{beam} AS beam" in froms
    assert "COPY --from=beam /opt/apache/beam /opt/apache/beam" in [
        f"COPY {args}" for args in _all(pipeline_image, "COPY")]
    assert _exec_form(_all(_final_stage(pipeline_image), "ENTRYPOINT")[-1]) == ["/opt/apache/beam/boot"]


def test_pipeline_image_installs_the_lock_like_bootstrap(pipeline_image) -> None:
    lock_header = (ROOT / "requirements.lock").read_text().splitlines()[1]
    lock_python = re.search(r"-p (\d+\.\d+)", lock_header).group(1)
    runs = " && ".join(_all(pipeline_image, "RUN"))
    assert f"uv python install {lock_python}" in runs and f"uv venv -p {lock_python}" in runs
    assert "uv pip install --no-cache -r requirements.lock" in runs
    assert "--no-deps --python-version 3.10 -r requirements-tfx.txt" in runs  # as bootstrap.sh
    assert "uv pip install --no-cache --no-deps -e ." in runs
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    uv_version = re.search(r"^UV_VERSION=(\S+)", bootstrap, re.M).group(1)
    assert f"UV_VERSION={uv_version}" in _all(pipeline_image, "ARG")
    # TF_USE_LEGACY_KERAS=1 comes from the same .pth file, in the venv's site-packages.
    assert re.search(r"cp scripts/tf_legacy_keras\.pth \"\$\(python -c '.*purelib.*'\)/\"", runs)
    assert "TF_USE_LEGACY_KERAS" not in _env(pipeline_image)


def test_pipeline_image_layout_is_what_the_kubeflow_runner_compiles_against(pipeline_image) -> None:
    final = _final_stage(pipeline_image)
    assert _all(final, "WORKDIR") == [kubeflow_runner.IMAGE_PROJECT_DIR]
    assert "COPY . ." in [f"COPY {args}" for args in _all(final, "COPY")]
    assert (ROOT / kubeflow_runner.CURATED_SCHEMA_IN_REPO).is_file()
    assert not _ignored(kubeflow_runner.CURATED_SCHEMA_IN_REPO)
    for needed in ("transform_module.py", "trainer_module.py", "setup.py", "requirements.lock",
                   "requirements-tfx.txt", "scripts/tf_legacy_keras.pth", "components/__init__.py",
                   "pipeline/pipeline.py"):
        assert (ROOT / needed).is_file() and not _ignored(needed), needed
    # KFP runs `python -m <executor>`: `python` must be the venv's, first on PATH.
    env = _env(pipeline_image)
    assert env["PATH"].split(":")[0] == f"{env['VIRTUAL_ENV']}/bin"
    import tfx.orchestration.kubeflow.v2.kubeflow_v2_dag_runner as dag_runner

    assert dag_runner.KUBEFLOW_TFX_CMD == ("python", "-m", KFP_EXECUTOR_MODULE)


def test_dockerignore_keeps_the_venv_and_runs_out() -> None:
    for heavy in (".venv/bin/python", ".git/HEAD", "runs/local/metadata.sqlite",
                  "service/__pycache__/app.cpython-311.pyc"):
        assert _ignored(heavy), heavy
    for source in _copy_sources(parse_dockerfile(PIPELINE_DOCKERFILE)) + \
            _copy_sources(parse_dockerfile(SERVICE_DOCKERFILE)):
        if source != ".":
            assert (ROOT / source).exists() and not _ignored(source.rstrip("/")), source


# --- the service image ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def service_image() -> list[tuple[str, str]]:
    return parse_dockerfile(SERVICE_DOCKERFILE)


def test_service_image_runs_the_service_on_its_port(service_image) -> None:
    (base,) = _all(service_image, "FROM")
    assert base.startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}-slim")
    assert _exec_form(_all(service_image, "ENTRYPOINT")[-1]) == ["python", "-m", "service.app"]
    parser = settings.build_parser()
    args = parser.parse_args(_exec_form(_all(service_image, "CMD")[-1]))
    assert args.host not in settings.LOOPBACK_HOSTS
    assert args.port == parser.get_default("port")
    assert _all(service_image, "EXPOSE") == [str(args.port)]
    health = _exec_form(_all(service_image, "HEALTHCHECK")[-1].split("CMD", 1)[1].strip())
    url = urllib.parse.urlsplit(re.search(r"'(http://[^']+)'", health[-1]).group(1))
    assert url.port == args.port
    stub = types.SimpleNamespace(settings=None, service=None, metrics=None, auth=None)
    assert url.path in {route.path for route in routes.build_router(stub).routes}
    assert _all(service_image, "USER") and _all(service_image, "USER")[-1] != "root"


def _service_import_closure() -> tuple[set[str], set[str]]:
    """(third-party distributions, first-party top-level packages) ``service.app`` imports.

    Run in a fresh interpreter, with uvicorn's httptools and uvloop parts the service selects.
    """
    code = """
import importlib.metadata as md, json, os, sys
import service.app, uvicorn.loops.uvloop, uvicorn.protocols.http.httptools_impl, redis.asyncio
owner = {}
for dist in md.distributions():
    for f in dist.files or ():
        owner[os.path.realpath(dist.locate_file(f))] = dist.metadata["Name"]
root = os.path.realpath(sys.argv[1])
prefix = os.path.realpath(sys.prefix)  # the venv, which may live inside the checkout
third, first = set(), set()
for module in list(sys.modules.values()):
    path = os.path.realpath(getattr(module, "__file__", None) or "/nonexistent")
    if path.startswith(prefix + os.sep):
        if path in owner:
            third.add(owner[path])
    elif path.startswith(root + os.sep):
        first.add(os.path.relpath(path, root).split(os.sep)[0])
print(json.dumps([sorted(third), sorted(first)]))
"""
    result = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True,
                            cwd=ROOT, timeout=120, check=True)
    third, first = json.loads(result.stdout.strip().splitlines()[-1])
    return set(third), set(first)


def _requirement_closure(names: list[str]) -> set[str]:
    """The distributions ``names`` pull in (installed metadata, markers evaluated, extras none)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for text in importlib.metadata.requires(name) or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


@pytest.fixture(scope="module")
def service_requirements() -> list[str]:
    lines = SERVICE_REQUIREMENTS.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_service_requirements_are_in_the_lock(service_requirements) -> None:
    locked = {line.split("==")[0].lower() for line in (ROOT / "requirements.lock").read_text().splitlines()
              if "==" in line and not line.startswith(("#", " "))}
    assert set(map(str.lower, service_requirements)) <= locked
    assert "-c requirements.lock" in " ".join(_all(parse_dockerfile(SERVICE_DOCKERFILE), "RUN"))


def test_service_image_holds_everything_the_service_imports_and_no_tensorflow(
        service_image, service_requirements) -> None:
    third, first = _service_import_closure()
    assert "tensorflow" not in third, "the service now imports TensorFlow: the slim image lacks it"
    installed = _requirement_closure(service_requirements)
    # setuptools: its distutils-precedence.pth runs at every start of the venv, not the service's.
    missing = {name for name in third
               if name.lower().replace("_", "-") not in installed} - {"shoprec", "setuptools"}
    assert not missing, f"the service imports distributions the image does not install: {sorted(missing)}"
    copied = {source.rstrip("/") for source in _copy_sources(service_image)}
    assert first <= copied, f"first-party packages imported but not copied: {sorted(first - copied)}"
