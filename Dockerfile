# The pipeline image. Every component of the compiled pipeline.yaml runs in it
# (python -m pipeline.kubeflow_runner --image ...), and so do the Beam workers on Dataflow
# (--sdk_container_image), Flink and Spark (--environment_config).
#
#   docker build -t REGISTRY/shoprec-pipeline:TAG .        # from the repository root
#
# tensorflow/tfx:1.16.0 runs TFX on conda's Python 3.10. This project and its lock file are
# CPython 3.11 (ml-metadata 1.17.1 is the only MLMD with a cp311 wheel; see docs/deploy.md). So
# the image keeps the TFX base (its CUDA, system libraries and layout) and installs the locked set
# into a Python 3.11 venv that comes first on PATH, the way scripts/bootstrap.sh builds .venv.
# tests/deploy/test_images.py checks this file against the code.

# Beam's worker boot binary, for the SDK version (2.59.0) and Python (3.11) of the venv.
FROM apache/beam_python3.11_sdk:2.59.0 AS beam

FROM tensorflow/tfx:1.16.0

ARG UV_VERSION=0.13.9
ENV SHOPREC_HOME=/opt/shoprec \
    UV_PYTHON_INSTALL_DIR=/opt/shoprec/python \
    VIRTUAL_ENV=/opt/shoprec/venv \
    PYTHONUNBUFFERED=1
ENV PATH=/opt/shoprec/venv/bin:$PATH

RUN python -m pip install --no-cache-dir "uv==${UV_VERSION}" \
 && uv python install 3.11 \
 && uv venv -p 3.11 --python-preference only-managed "$VIRTUAL_ENV"

WORKDIR /opt/shoprec/src

# Dependencies first (their layer is reused while the lock is unchanged), as in bootstrap.sh:
# the lock, then TFX and ml-pipelines-sdk without their stale pins.
COPY requirements.lock requirements-tfx.txt ./
RUN uv pip install --no-cache -r requirements.lock \
 && uv pip install --no-cache --no-deps --python-version 3.10 -r requirements-tfx.txt

# The project, installed editable so that the module files (transform_module, trainer_module),
# the components and the curated schema (pipeline/schema/schema.pbtxt) are importable by
# dotted path from this folder.
COPY . .
RUN uv pip install --no-cache --no-deps -e . \
 && cp scripts/tf_legacy_keras.pth "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/" \
 && python -c "import os, transform_module, trainer_module, tfx; assert os.environ['TF_USE_LEGACY_KERAS'] == '1'"

COPY --from=beam /opt/apache/beam /opt/apache/beam
# Beam workers start here; KFP overrides it with the TFX executor command of each component.
ENTRYPOINT ["/opt/apache/beam/boot"]
