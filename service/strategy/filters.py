"""Business filters: which catalogue items a request may be shown.

An item is allowed unless it is denylisted (out of stock ...), outside the request's price range,
excluded by the request, already bought by the user (unless the request says otherwise), or one
of the request's context items (in the cart, being viewed).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time

import numpy as np

from service.strategy.catalogue import Catalogue

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FilterSpec:
    """The filters a request asks for.

    Attributes:
      min_price: lowest price shown (inclusive), if any.
      max_price: highest price shown (inclusive), if any.
      exclude_rows: catalogue rows never to show in this response.
      exclude_purchased: leave out the items the user bought.
    """

    min_price: float | None = None
    max_price: float | None = None
    exclude_rows: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    exclude_purchased: bool = True


class Denylist:
    """Item ids not to recommend, read from a text file (one id per line, ``#`` comments).

    The file is re-read when its modification time changes, checked at most once per
    ``check_interval_seconds``, so stock changes apply without a restart. Ids the catalogue
    lacks are ignored.

    Args:
      catalogue: the catalogue.
      path: the file; None for an empty denylist.
      check_interval_seconds: how often to look at the file's modification time.

    Raises:
      OSError: the file cannot be read at start.
    """

    def __init__(self, catalogue: Catalogue, path: str | None, check_interval_seconds: float = 1.0) -> None:
        self._catalogue = catalogue
        self._path = path
        self._interval = check_interval_seconds
        self._lock = threading.Lock()
        self._mask = np.zeros(len(catalogue), bool)
        self._mtime: float | None = None
        self._checked_at = 0.0
        if path is not None:
            self._load(os.stat(path).st_mtime)

    def _load(self, mtime: float) -> None:
        with open(self._path, encoding="utf-8") as file:  # type: ignore[arg-type]
            ids = [line.split("#", 1)[0].strip() for line in file]
        rows, _ = self._catalogue.rows(item_id for item_id in ids if item_id)
        mask = np.zeros(len(self._catalogue), bool)
        mask[rows] = True
        self._mask, self._mtime = mask, mtime
        _log.info("denylist %s: %d catalogue items", self._path, int(mask.sum()))

    def mask(self) -> np.ndarray:
        """``[I]`` bool, True for denied items (re-reading the file if it changed)."""
        now = time.monotonic()
        if self._path is not None and now - self._checked_at >= self._interval:
            with self._lock:
                self._checked_at = now
                try:
                    mtime = os.stat(self._path).st_mtime
                    if mtime != self._mtime:
                        self._load(mtime)
                except OSError as err:
                    _log.warning("denylist %s unreadable, keeping the previous one: %s", self._path, err)
        return self._mask


class BusinessFilters:
    """Builds each request's allowed-items mask."""

    def __init__(self, catalogue: Catalogue, denylist: Denylist) -> None:
        self._prices = catalogue.prices
        self._denylist = denylist

    def allowed(self, spec: FilterSpec, purchased_rows: np.ndarray, context_rows: np.ndarray) -> np.ndarray:
        """Returns ``[I]`` bool, True for the items this request may show."""
        allowed = ~self._denylist.mask()
        if spec.min_price is not None:
            allowed &= self._prices >= spec.min_price
        if spec.max_price is not None:
            allowed &= self._prices <= spec.max_price
        allowed[spec.exclude_rows] = False
        allowed[context_rows] = False
        if spec.exclude_purchased:
            allowed[purchased_rows] = False
        return allowed
