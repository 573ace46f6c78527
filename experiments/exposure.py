"""The exposure record: one row per ``/recommend`` answer that an experiment decided.

The service appends one record per response that carries an experiment arm, to
``exposures.csv`` with exactly these columns (in this order)::

    request_id, user_id, experiment, arm, scene, timestamp, propensity

``propensity`` is the probability with which the arm was chosen for this request (the arm's
weight under a fixed split, the bandit's allocation probability under a bandit). Clicks,
carts and purchases in ``events.csv`` are attributed to arms by ``request_id``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Iterable, Sequence

from shoprec import features

EXPOSURES_FILE = "exposures.csv"
# What ``python -m service.event_log export`` writes beside the canonical files: every logged
# event (impressions included) with its request id, so that events can be attributed to arms.
ATTRIBUTED_EVENTS_FILE = "attributed_events.csv"
# Names the service's event log also uses; shoprec.features does not declare them (yet).
REQUEST_ID = "request_id"
EXPERIMENT = "experiment"
ARM = "arm"
SCENE = "scene"
PROPENSITY = "propensity"
EXPOSURE_COLUMNS: tuple[str, ...] = (REQUEST_ID, features.USER_ID, EXPERIMENT, ARM, SCENE,
                                     features.TIMESTAMP, PROPENSITY)


@dataclasses.dataclass(frozen=True)
class Exposure:
    """One experiment decision on one request.

    Attributes:
      request_id: the ``/recommend`` response's request id.
      user_id: the user it answered.
      experiment: the experiment's name.
      arm: the arm served.
      scene: the request's scene.
      timestamp: Unix seconds (UTC) of the response.
      propensity: probability of this arm for this request, in (0, 1].
    """

    request_id: str
    user_id: str
    experiment: str
    arm: str
    scene: str
    timestamp: int
    propensity: float

    def __post_init__(self) -> None:
        if not 0.0 < self.propensity <= 1.0:
            raise ValueError(f"exposure {self.request_id}: propensity must be in (0, 1],"
                             f" got {self.propensity}")

    def row(self) -> tuple[object, ...]:
        """Values in ``EXPOSURE_COLUMNS`` order."""
        return dataclasses.astuple(self)  # the fields are declared in EXPOSURE_COLUMNS order


def write_exposures(path: str, exposures: Iterable[Exposure], append: bool = False) -> int:
    """Writes exposure records as CSV (header only when the file is new); returns the count."""
    new_file = not (append and os.path.exists(path))
    count = 0
    with open(path, "a" if append else "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if new_file:
            writer.writerow(EXPOSURE_COLUMNS)
        for exposure in exposures:
            writer.writerow(exposure.row())
            count += 1
    return count


def check_exposure_columns(columns: Sequence[str], where: str) -> None:
    """Raises ValueError naming the file and the missing columns, if any are missing."""
    missing = [column for column in EXPOSURE_COLUMNS if column not in columns]
    if missing:
        raise ValueError(f"{where}: missing exposure columns {missing}; need {EXPOSURE_COLUMNS}")
