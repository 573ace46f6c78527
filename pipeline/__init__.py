"""pipeline package."""

import os

# TFRS needs Keras 2: must be set before TensorFlow is first imported (see ../shared/STACK.md).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
