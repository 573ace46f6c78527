"""One command for the whole stack on embedded defaults: ``python -m ui.demo``.

1. runs the pipeline (``python -m pipeline.local_runner``) when ``<output_dir>`` has no pushed model;
2. starts the model server (``python -m serving.model_server``) on the pushed model;
3. starts the recommendation service (``python -m service.app``: in-process feature store, SQLite
   event log in ``<output_dir>/demo/events.sqlite``);
4. starts the Streamlit app (``streamlit run ui/app.py``) and prints its URL.

Ctrl-C (or SIGTERM) stops all of them: each child runs in its own process group, which gets
SIGTERM, then SIGKILL after a grace period, so no process outlives the demo. Logs go to
``<output_dir>/demo/*.log``. Only the standard library and ``shoprec.config`` are imported, so ``--help``
answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from serving import model_config
from shoprec import config

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = config.MODEL_NAME
RANKING_MODEL_NAME = config.RANKING_MODEL_NAME
STOP_GRACE_S = 20.0
READY_TIMEOUT_S = 300.0


class DemoError(Exception):
    """The demo cannot start; the message says why and what to do."""


def build_parser() -> argparse.ArgumentParser:
    """The demo's flags."""
    parser = argparse.ArgumentParser(
        prog="python -m ui.demo", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Starts the model server, the recommendation service and the Streamlit app on a "
                    "pipeline run (running the pipeline first when no model is pushed). Ctrl-C stops all.")
    parser.add_argument("--output_dir", default="runs/local",
                        help="the pipeline's output folder: reused when it has a pushed model, else the "
                             "pipeline runs into it")
    parser.add_argument("--events", type=int, default=None,
                        help="shop size when the pipeline must run: events (default: the runner's)")
    parser.add_argument("--users", type=int, default=None, help="shop size: users (default: the runner's)")
    parser.add_argument("--items", type=int, default=None, help="shop size: items (default: the runner's)")
    parser.add_argument("--host", default="127.0.0.1", help="address every server listens on")
    parser.add_argument("--model_port", type=int, default=8500, help="model server gRPC port")
    parser.add_argument("--model_rest_port", type=int, default=8501, help="model server REST port")
    parser.add_argument("--service_port", type=int, default=8080, help="recommendation service port")
    parser.add_argument("--ui_port", type=int, default=8502, help="Streamlit app port")
    parser.add_argument("--experiments_dir", default="runs/experiments",
                        help="experiment definitions and reports the Experiments page reads")
    return parser


def pushed_versions(output_dir: Path, model_name: str = MODEL_NAME) -> list[int]:
    """The model versions pushed to ``<output_dir>/serving/<model_name>/`` (with a saved_model.pb)."""
    base = output_dir / "serving" / model_name
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file())


def served_models(output_dir: Path) -> dict[str, str]:
    """``{model name: base path}`` for the model server: the retrieval model, and the ranking
    model when one was pushed (without it the service keeps the retrieval order, with a warning)."""
    names = [MODEL_NAME] + ([RANKING_MODEL_NAME] if pushed_versions(output_dir, RANKING_MODEL_NAME) else [])
    return {name: str(output_dir / "serving" / name) for name in names}


def pipeline_command(args: argparse.Namespace) -> list[str]:
    """``python -m pipeline.local_runner --output_dir ...`` with the shop-size flags that were given."""
    command = [sys.executable, "-m", "pipeline.local_runner", "--output_dir", args.output_dir]
    for flag in ("events", "users", "items"):
        if getattr(args, flag) is not None:
            command += [f"--{flag}", str(getattr(args, flag))]
    return command


def check_port_free(host: str, port: int, flag: str) -> None:
    """Raises DemoError naming ``flag`` when something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise DemoError(f"port {port} on {host} is taken ({err.strerror}): stop what listens there "
                            f"or pass another {flag}") from err


@dataclasses.dataclass
class Child:
    """A started server: its process (leader of its own process group) and its log."""

    name: str
    process: subprocess.Popen
    log_path: Path
    log_start: int = 0  # the log's size when the child started (logs are appended to)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the child's log."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM to the whole process group, SIGKILL after ``grace_s``."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        # Grandchildren (e.g. Beam workers) may outlive the leader: the group gets a SIGKILL too.
        _signal_group(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass  # the group is already gone


def spawn(name: str, command: Sequence[str], log_dir: Path, env: dict[str, str]) -> Child:
    """Starts ``command`` from the repository root in a new process group, output to ``<name>.log``."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:  # a file, not a pipe: a full pipe would block the server
        start = log.tell()
        process = subprocess.Popen(list(command), cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return Child(name, process, log_path, start)


def relay_output(child: Child, out: IO[str], poll_s: float = 0.5) -> int:
    """Waits for ``child`` to exit, copying each line it writes to its log to ``out`` (indented)
    as it comes; returns the exit status.

    The pipeline's log is its run console: one line per component, then the run's summary (the
    full logs go to the run's own ``logs/pipeline.log``).
    """
    offset = child.log_start
    while True:
        status = child.process.poll()
        with open(child.log_path, "rb") as log:
            log.seek(offset)
            chunk = log.read()
        complete = chunk if status is not None else chunk[:chunk.rfind(b"\n") + 1]  # whole lines only
        for line in complete.decode("utf-8", "replace").splitlines():
            if line.strip():
                print(f"  {line.rstrip()}", file=out, flush=True)
        offset += len(complete)
        if status is not None:
            return status
        time.sleep(poll_s)


def wait_ready(child: Child, url: str, expect: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Waits until GET ``url`` answers 200 with ``expect`` in its body; DemoError if the child dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise DemoError(f"{child.name} exited with {child.process.returncode}; the end of "
                            f"{child.log_path}:\n{child.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if expect in reply.read().decode("utf-8", "replace"):
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise DemoError(f"{child.name} was not ready at {url} after {timeout_s:.0f} s; see {child.log_path}")


class _Stop(Exception):
    """Raised in the main thread by SIGINT or SIGTERM."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def run(args: argparse.Namespace) -> int:
    """Runs the demo until Ctrl-C; returns the exit status."""
    output_dir = Path(args.output_dir).resolve()
    log_dir = output_dir / "demo"
    host = args.host
    for port, flag in ((args.model_port, "--model_port"), (args.model_rest_port, "--model_rest_port"),
                       (args.service_port, "--service_port"), (args.ui_port, "--ui_port")):
        check_port_free(host, port, flag)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p))
    children: list[Child] = []
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        if not pushed_versions(output_dir):
            output_dir.mkdir(parents=True, exist_ok=True)
            log_dir.mkdir(parents=True, exist_ok=True)
            command = pipeline_command(args)
            print(f"demo: no pushed model in {output_dir}; running the pipeline (log: {log_dir / 'pipeline.log'})",
                  flush=True)
            children.append(spawn("pipeline", command, log_dir, env))
            status = relay_output(children[-1], sys.stdout)
            children.pop()
            if status != 0 or not pushed_versions(output_dir):
                raise DemoError(f"the pipeline {'failed' if status else 'pushed no model'} "
                                f"(exit {status}); see {log_dir / 'pipeline.log'} and {output_dir / 'logs'}")
        log_dir.mkdir(parents=True, exist_ok=True)
        version = pushed_versions(output_dir)[-1]
        served = served_models(output_dir)
        models_config = model_config.write_model_config_file(str(log_dir / "models.config"), served)
        children.append(spawn("model_server", [
            sys.executable, "-m", "serving.model_server", f"--model_config_file={models_config}",
            f"--port={args.model_port}", f"--rest_api_port={args.model_rest_port}", f"--bind_address={host}"],
            log_dir, env))
        for name in served:
            wait_ready(children[-1], f"http://{host}:{args.model_rest_port}/v1/models/{name}", "AVAILABLE")
        ranking = (f", ranking version {pushed_versions(output_dir, RANKING_MODEL_NAME)[-1]}"
                   if RANKING_MODEL_NAME in served else ", no ranking model pushed (retrieval order)")
        print(f"demo: model server up, version {version}{ranking} (gRPC {host}:{args.model_port}, "
              f"REST http://{host}:{args.model_rest_port})", flush=True)
        service_url = f"http://{host}:{args.service_port}"
        children.append(spawn("service", [
            sys.executable, "-m", "service.app", "--data_dir", str(output_dir / "data"),
            "--model_url", f"grpc://{host}:{args.model_port}", "--event_log", str(log_dir / "events.sqlite"),
            "--host", host, "--port", str(args.service_port)], log_dir, env))
        wait_ready(children[-1], f"{service_url}/healthz", '"status":"ok"')
        print(f"demo: recommendation service up at {service_url} (event log {log_dir / 'events.sqlite'})",
              flush=True)
        ui_url = f"http://{host}:{args.ui_port}"
        children.append(spawn("ui", [
            sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "ui" / "app.py"),
            f"--server.port={args.ui_port}", f"--server.address={host}", "--server.headless=true",
            "--browser.gatherUsageStats=false", "--client.toolbarMode=viewer", "--",
            "--service_url", service_url, "--run_dir", str(output_dir),
            "--experiments_dir", str(Path(args.experiments_dir).resolve())], log_dir, env))
        wait_ready(children[-1], f"{ui_url}/_stcore/health", "ok")
        print(f"\ndemo: open {ui_url}\n      logs in {log_dir}; Ctrl-C stops the app, the service and the "
              "model server", flush=True)
        while True:
            for child in children:
                if child.process.poll() is not None:
                    raise DemoError(f"{child.name} exited with {child.process.returncode}; the end of "
                                    f"{child.log_path}:\n{child.log_tail()}")
            time.sleep(0.5)
    except _Stop as stop:
        print(f"\ndemo: {stop}: stopping {', '.join(c.name for c in reversed(children)) or 'nothing'}", flush=True)
        return 0
    except DemoError as err:
        print(f"demo: {err}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in reversed(children):
            child.stop()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the flags and runs the demo."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except DemoError as err:  # a taken port, before anything started
        print(f"demo: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
