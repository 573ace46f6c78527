"""Pipeline page: the runs in ML Metadata, metrics against K, data statistics and anomalies, and the
blessed and pushed model versions."""

from __future__ import annotations

import streamlit as st

from shoprec import run_metadata
from ui import pipeline_data as data
from ui.client import ServiceError, ServiceUnavailable
from ui.page_support import client, settings

current = settings()
st.title("Pipeline")
try:
    store = data.open_run_store(current.run_dir)
except data.RunFolderError as err:
    st.warning(str(err))
    st.stop()

runs = run_metadata.pipeline_runs(store, data.pipeline_name())
st.subheader("Runs")
if not runs:
    st.info(f"ML Metadata in `{current.run_dir}` has no run of the `{data.pipeline_name()}` pipeline yet.")
else:
    st.dataframe(data.runs_table(runs), hide_index=True, key="runs")
    chosen = st.selectbox("Components of run", [r.run_id for r in runs], key="run")
    run = next(r for r in runs if r.run_id == chosen)
    st.caption(f"{run.status} · {run.seconds:.1f} s · {run.cache_hits} of {len(run.executions)} "
               "components from the cache")
    st.dataframe(data.components_table(run), hide_index=True, key="components")

st.subheader("Metrics against K")
evaluation = data.load_evaluation(current.run_dir, store)
if evaluation is None:
    st.info("No evaluation yet: the RetrievalEvaluator has not run in this folder.")
else:
    slice_name = st.selectbox("Slice", evaluation.slices(), key="slice")
    # Inline, not st.image: Streamlit 1.60's /media route fails (HTTP 500) with this Starlette.
    st.markdown(data.png_img_tag(data.metrics_plot_png(evaluation, slice_name), "metrics against K"),
                unsafe_allow_html=True)
    st.caption(f"From `{evaluation.source}`")
    st.dataframe(data.metrics_table(evaluation, slice_name), hide_index=True, key="metrics")

st.subheader("Model versions: blessed and pushed")
try:
    serving_version = client(current.service_url).health().model_version
except (ServiceUnavailable, ServiceError) as err:
    serving_version = None
    st.caption(f"The service at `{current.service_url}` did not say which version it serves ({err}).")
versions = run_metadata.model_versions(store)
if versions:
    st.dataframe(data.versions_table(versions, serving_version), hide_index=True, key="versions")
else:
    st.info("No model has been evaluated yet.")

st.subheader("Data statistics")
statistics = data.load_statistics(store)
if not statistics:
    st.info("No StatisticsGen output yet.")
for split in statistics:
    st.markdown(f"**{split.split}**: {split.examples:,} examples, {len(split.features)} features")
    st.dataframe(split.features, hide_index=True, key=f"statistics-{split.split}",
                 height=35 * (len(split.features) + 1) + 3)  # every feature, no inner scrolling

st.subheader("Anomalies of the last validation")
anomalies = data.load_anomalies(store)
if anomalies is None:
    st.info("No ExampleValidator output yet.")
else:
    for split in anomalies:
        if split.anomalies.empty:
            st.success(f"**{split.split}**: no anomalies")
        else:
            st.error(f"**{split.split}**: {len(split.anomalies)} anomalies")
            st.dataframe(split.anomalies, hide_index=True, key=f"anomalies-{split.split}")
