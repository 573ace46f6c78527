"""Experiments page: the running experiments and their allocation, and their analysis reports."""

from __future__ import annotations

import json
import os

import streamlit as st

from ui import experiments_data as data
from ui.page_support import settings

current = settings()
st.title("Experiments")
try:
    folder = data.load_folder(current.experiments_dir)
except data.ExperimentFileError as err:
    st.error(str(err))
    st.stop()

if not folder.running:
    st.info(f"**No experiments are running.** No experiment definition in `{current.experiments_dir}`. "
            "Put one there (YAML or JSON, as in `experiments/examples/`) or point the app at another folder "
            "with `--experiments_dir` or `$SHOPREC_EXPERIMENTS_DIR`.")
for definition in folder.definitions:
    st.subheader(definition.name)
    if definition.raw.get("description"):
        st.caption(str(definition.raw["description"]))
    facts = definition.facts()
    st.markdown(" · ".join(f"**{name}**: {value}" for name, value in facts.items()))
    st.dataframe(definition.arms_table(), hide_index=True, key=f"arms-{definition.name}")
    st.caption(f"From `{definition.path}`")

if folder.reports:
    st.header("Analysis reports")
elif folder.running:
    st.caption("No analysis report yet (JSON or Markdown in the same folder).")
for report in folder.reports:
    st.subheader(report.title)
    if report.markdown is not None:
        st.markdown(report.markdown)
        continue
    srm = report.srm()
    if srm is not None:
        text = f"sample-ratio check: p = {srm.get('p_value')}"
        (st.success if srm.get("passed") else st.error)(
            f"{text}: {'passed' if srm.get('passed') else 'FAILED, the split is broken; do not trust the lifts'}")
    metrics = report.metrics_table()
    if metrics is not None:
        st.dataframe(metrics, hide_index=True, key=f"lift-{os.path.basename(report.path)}")
    allocation = report.bandit_allocation()
    if allocation is not None:
        st.markdown("**Bandit allocation over time**")
        st.line_chart(allocation)
    regret = report.bandit_regret()
    if regret is not None:
        st.markdown("**Cumulative regret**")
        st.line_chart(regret)
    with st.expander("Raw report"):
        st.code(json.dumps(report.data, indent=2), language="json")
