"""The Streamlit app's entry point: ``streamlit run ui/app.py -- [--service_url URL] [--run_dir DIR]
[--experiments_dir DIR]`` (or the environment variables of :mod:`ui.config`).

Three pages: Recommend (``views/recommend.py``), Pipeline and Experiments.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts only this script's folder on sys.path; the pages import the project's packages.
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import streamlit as st  # noqa: E402

from ui.page_support import settings  # noqa: E402

st.set_page_config(page_title="shoprec", page_icon=":material/storefront:", layout="wide")
_PAGES = Path(__file__).resolve().parent / "views"
navigation = st.navigation([
    st.Page(_PAGES / "recommend.py", title="Recommend", icon=":material/shopping_cart:", default=True),
    st.Page(_PAGES / "pipeline.py", title="Pipeline", icon=":material/account_tree:"),
    st.Page(_PAGES / "experiments.py", title="Experiments", icon=":material/science:"),
])
current = settings()
with st.sidebar:
    st.caption(f"Service: `{current.service_url}`  \nRun folder: `{current.run_dir}`  \n"
               f"Experiments: `{current.experiments_dir}`")
navigation.run()
