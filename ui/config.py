"""Where the app finds the service, the pipeline run and the experiments: flags, else environment.

Flags follow ``streamlit run ui/app.py --``; each has an environment variable, so the app runs
against a deployed service without a code change.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence

SERVICE_URL_ENV = "SHOPREC_SERVICE_URL"
RUN_DIR_ENV = "SHOPREC_RUN_DIR"
EXPERIMENTS_DIR_ENV = "SHOPREC_EXPERIMENTS_DIR"
DEFAULT_SERVICE_URL = "http://127.0.0.1:8080"
DEFAULT_RUN_DIR = "runs/local"
DEFAULT_EXPERIMENTS_DIR = "runs/experiments"


@dataclasses.dataclass(frozen=True)
class UiSettings:
    """What the app reads.

    Attributes:
      service_url: base URL of the recommendation service (``python -m service.app``).
      run_dir: a pipeline ``--output_dir`` (``metadata.sqlite``, ``run_summary.json``, ``data/``).
      experiments_dir: experiment definitions (YAML/JSON) and analysis reports (JSON/Markdown).
    """

    service_url: str = DEFAULT_SERVICE_URL
    run_dir: str = DEFAULT_RUN_DIR
    experiments_dir: str = DEFAULT_EXPERIMENTS_DIR


def build_parser() -> argparse.ArgumentParser:
    """The app's flags (after ``--`` on the ``streamlit run`` command line)."""
    parser = argparse.ArgumentParser(prog="streamlit run ui/app.py --", allow_abbrev=False,
                                     description="The shoprec Streamlit app.")
    parser.add_argument("--service_url", default=None,
                        help=f"recommendation service URL (env {SERVICE_URL_ENV}; default {DEFAULT_SERVICE_URL})")
    parser.add_argument("--run_dir", default=None,
                        help=f"pipeline output folder (env {RUN_DIR_ENV}; default {DEFAULT_RUN_DIR})")
    parser.add_argument("--experiments_dir", default=None,
                        help=f"experiment files and reports (env {EXPERIMENTS_DIR_ENV}; "
                             f"default {DEFAULT_EXPERIMENTS_DIR})")
    return parser


def load_settings(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> UiSettings:
    """Settings from ``argv`` (unknown arguments are ignored), then ``environ``, then the defaults."""
    args, _ = build_parser().parse_known_args(list(argv))
    return UiSettings(
        service_url=(args.service_url or environ.get(SERVICE_URL_ENV) or DEFAULT_SERVICE_URL).rstrip("/"),
        run_dir=args.run_dir or environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR,
        experiments_dir=args.experiments_dir or environ.get(EXPERIMENTS_DIR_ENV) or DEFAULT_EXPERIMENTS_DIR)
