"""TF_USE_LEGACY_KERAS=1 holds in every process of the venv, set in one place (a .pth file)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PTH = REPO / "scripts" / "tf_legacy_keras.pth"


def test_a_fresh_interpreter_selects_keras_2_without_any_setting() -> None:
    env = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    code = ("import os, tensorflow as tf; print(os.environ['TF_USE_LEGACY_KERAS'], "
            "tf.keras.layers.Dense.__module__.split('.')[0])")
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                               timeout=120, check=True)
    assert completed.stdout.split() == ["1", "tf_keras"]  # Keras 2, as TFRS needs


def test_the_venv_runs_the_projects_pth_file() -> None:
    import sysconfig

    installed = Path(sysconfig.get_paths()["purelib"]) / PTH.name
    assert installed.read_text() == PTH.read_text()


# Setting it: os.environ[...] = / setdefault(...) / an env dict or shell assignment / Dockerfile ENV.
_SETS_IT = re.compile(r"""setdefault\(\s*["']TF_USE_LEGACY_KERAS|\[["']TF_USE_LEGACY_KERAS["']\]\s*=(?!=)"""
                      r"""|TF_USE_LEGACY_KERAS\s*[:=]\s*["']?1|(?:ENV|export)\s+TF_USE_LEGACY_KERAS""")


def test_no_other_file_sets_it() -> None:
    candidates = [path for folder in ("shoprec", "serving", "service", "components", "pipeline", "bench",
                                      "experiments", "ui", "tests", "deploy", "scripts")
                  if (REPO / folder).exists() for path in (REPO / folder).rglob("*") if path.is_file()]
    candidates += [REPO / name for name in ("trainer_module.py", "transform_module.py", "Makefile", ".ci/run",
                                            "Dockerfile", "Dockerfile.service") if (REPO / name).exists()]
    offenders = [str(path.relative_to(REPO)) for path in candidates
                 if path not in (PTH, Path(__file__).resolve()) and path.suffix not in (".png", ".pyc", ".sqlite")
                 and any(_SETS_IT.search(line) for line in path.read_text(encoding="utf-8", errors="ignore").splitlines()
                         if not line.lstrip().startswith("#"))]
    assert offenders == []
