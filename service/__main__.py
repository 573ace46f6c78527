"""``python -m service``: the recommendation service (same as ``python -m service.app``)."""

import sys

from service.app import main

sys.exit(main())
