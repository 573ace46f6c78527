"""Streamlit glue the pages share: settings, the cached client and shop, error boxes."""

from __future__ import annotations

import os
import sys

import streamlit as st

from ui import config, shop
from ui.client import ServiceClient


def settings() -> config.UiSettings:
    """The app's settings (flags after ``--``, else the environment)."""
    return config.load_settings(sys.argv[1:])


@st.cache_resource(show_spinner=False)
def client(service_url: str) -> ServiceClient:
    """One pooled client per service URL."""
    return ServiceClient(service_url)


@st.cache_data(show_spinner=False, max_entries=4)
def _shop(run_dir: str, modified: float) -> shop.Shop | None:
    return shop.load_shop(run_dir)


def load_shop(run_dir: str) -> shop.Shop | None:
    """The run's shop files, re-read when events.csv changes."""
    events = os.path.join(shop.data_dir(run_dir), "events.csv")
    return _shop(run_dir, os.path.getmtime(events) if os.path.isfile(events) else 0.0)


def service_down(url: str, detail: str) -> None:
    """The box shown when the service does not answer."""
    st.error(f"**The recommendation service is not reachable** at `{url}` ({detail}).\n\n"
             "Start the whole stack with `python -m ui.demo`, start the service with "
             "`python -m service.app --data_dir <run>/data --model_url grpc://127.0.0.1:8500`, or point the "
             f"app at a running one with `--service_url` or `${config.SERVICE_URL_ENV}`.")
