"""Names TF Serving's protocol fixes, declared once for the server and the client.

They come from TF Serving itself: the default signature (``tf.saved_model``'s
``DEFAULT_SERVING_SIGNATURE_DEF_KEY``), the version states of ``GetModelStatus``
(``ModelVersionStatus.State``) and the warmup file an export may carry, with its record limit
(``saved_model_warmup_util.cc``). Importing this module costs nothing (no TensorFlow).
"""

from __future__ import annotations

import os

DEFAULT_SIGNATURE_NAME = "serving_default"

# GetModelStatus's ModelVersionStatus.State names.
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000
