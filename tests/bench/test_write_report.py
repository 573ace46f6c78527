"""Every recorded benchmark says what produced it: the commit and the command."""

import json
import subprocess
import sys
from pathlib import Path

from bench.generate import REPO, write_report


def test_a_report_gets_the_commit_and_the_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(Path(REPO) / "bench" / "pipeline.py"), "--sizes", "100000"])
    write_report({"figure": 1.5}, str(tmp_path / "out" / "r.json"))
    report = json.loads((tmp_path / "out" / "r.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert report["figure"] == 1.5
    assert report["commit"].removesuffix("+dirty") == head
    assert report["command"] == "python -m bench.pipeline --sizes 100000"


def test_a_report_keeps_its_own_commit_and_command(tmp_path: Path) -> None:
    write_report({"commit": "abc", "command": "python -m bench.x --y"}, str(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text()) == {"commit": "abc", "command": "python -m bench.x --y"}
