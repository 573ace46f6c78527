"""The run console: one line per component, logs to the file, a failure names its component."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import run_summary
from pipeline.run_console import RunConsole

ORCHESTRATOR = logging.getLogger("absl")
REPO = Path(__file__).resolve().parents[2]


def _component(name: str, seconds: float = 0.0, cached: bool = False) -> None:
    """Logs what TFX's local orchestrator logs around one component."""
    ORCHESTRATOR.info("Component %s is running.", name)
    if cached:
        ORCHESTRATOR.info("A cached execution %d is used.", 7)
    time.sleep(seconds)
    ORCHESTRATOR.info("Component %s is finished.", name)


@pytest.fixture(autouse=True)
def _absl_info() -> None:
    level = ORCHESTRATOR.level
    ORCHESTRATOR.setLevel(logging.INFO)
    yield
    ORCHESTRATOR.setLevel(level)


def _terminal_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("full logs:")]


def test_off_a_terminal_a_quick_component_prints_one_line_and_a_slow_one_two(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with RunConsole(str(tmp_path), interactive=False, still_running_after_s=0.2):
        _component("StatisticsGen")
        _component("Trainer", seconds=0.6)
        _component("Transform", cached=True)
    lines = _terminal_lines(capfd.readouterr().out)
    assert [line.split()[:2] for line in lines] == [
        ["StatisticsGen", "done"], ["Trainer", "running"], ["Trainer", "done"], ["Transform", "cached"]]
    assert float(lines[2].split()[2]) >= 0.6


def test_on_a_terminal_the_done_line_rewrites_the_running_line(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with RunConsole(str(tmp_path), interactive=True):
        _component("Trainer")
    out = capfd.readouterr().out
    assert "Trainer" in out and out.count("\n") == 2  # the "full logs" line and one per component
    assert "running ...\r\x1b[K  Trainer" in out


SCRIPT = """
import logging, os, sys
from pipeline.run_console import RunConsole
logging.getLogger("absl").setLevel(logging.INFO)
with RunConsole(sys.argv[1], interactive=False) as console:
    print("a Python warning")
    os.write(2, b"a C++ log line\\n")
    logging.getLogger("absl").info("Component %s is running.", "Pusher")
    logging.getLogger("absl").info("Component %s is finished.", "Pusher")
    logging.getLogger("absl").info("Component %s is running.", "Trainer")
    if sys.argv[2] == "fail":
        raise ValueError("no examples in the train split\\nsecond line")
    logging.getLogger("absl").info("Component %s is finished.", "Trainer")
"""


def _run(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), mode], capture_output=True,
                          text=True, cwd=REPO, timeout=60)


def test_logs_go_to_the_file_and_only_progress_to_the_terminal(tmp_path: Path) -> None:
    result = _run(tmp_path, "ok")
    assert result.returncode == 0, result.stderr
    assert _terminal_lines(result.stdout) == [l for l in _terminal_lines(result.stdout) if " done " in l]
    assert [line.split()[0] for line in _terminal_lines(result.stdout)] == ["Pusher", "Trainer"]
    assert result.stderr == ""
    log = (tmp_path / "pipeline.log").read_text()
    assert "a Python warning" in log and "a C++ log line" in log and "[progress]   Pusher" in log


def test_a_failure_names_the_component_the_cause_and_the_log(tmp_path: Path) -> None:
    result = _run(tmp_path, "fail")
    assert result.returncode == 1
    assert "FAILED: component Trainer failed: ValueError: no examples in the train split" in result.stderr
    assert "  second line" in result.stderr
    assert f"full log: {tmp_path / 'pipeline.log'}" in result.stderr
    assert "Traceback" in (tmp_path / "pipeline.log").read_text()


def test_the_runner_hides_only_the_traceback_the_console_reported(tmp_path: Path, monkeypatch) -> None:
    from pipeline import local_runner

    def fails_before_the_console() -> int:
        raise ValueError("conflicting option string: --seed")

    def fails_inside_the_console() -> int:
        with RunConsole(str(tmp_path), interactive=False):
            raise ValueError("no examples")

    monkeypatch.setattr(local_runner, "main", fails_before_the_console)
    with pytest.raises(ValueError, match="--seed"):  # not a silent exit status 1
        local_runner.cli()
    monkeypatch.setattr(local_runner, "main", fails_inside_the_console)
    assert local_runner.cli() == 1


def test_the_final_summary_gives_the_components_in_one_line_after_the_console() -> None:
    summary = {"components": {"EventsExampleGen": {"state": "CACHED", "seconds": 0.0},
                              "Trainer": {"state": "COMPLETE", "seconds": 12.5},
                              "Pusher": {"state": "COMPLETE", "seconds": 0.1}},
               "metrics": None, "blessed": True, "pushed": False, "identical_to_version": "17",
               "wall_seconds": 20.0, "output_dir": "/out"}
    short = run_summary.format_summary(summary, per_component=False).splitlines()
    assert "  components: 3, 2 ran, 1 cached (times above)" in short
    assert not any("Trainer" in line for line in short)
    assert "  pushed: nothing (identical to the serving version 17)" in short
    full = run_summary.format_summary(summary).splitlines()
    assert len(full) == len(short) + 2 and any(line.startswith("  Trainer ") for line in full)
