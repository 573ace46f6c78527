"""Shared test set-up: Keras 2 for TFRS must be selected before TensorFlow is imported."""


