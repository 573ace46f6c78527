"""Shared test set-up: Keras 2 for TFRS must be selected before TensorFlow is imported."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
