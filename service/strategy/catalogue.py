"""The shop's catalogue (``items.csv``) as arrays indexed by row, with an id -> row lookup."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from shoprec import features
from shoprec.data import canonical


@dataclasses.dataclass(frozen=True)
class Catalogue:
    """Every item of the shop; row ``r`` of each array describes the same item.

    Attributes:
      item_ids: ``[I]`` item ids (``str``).
      categories: ``[I]`` category ids.
      brands: ``[I]`` brand ids.
      prices: ``[I]`` prices (float64).
      category_codes: ``[I]`` int index of each item's category in ``category_names``.
      category_names: the distinct categories, sorted.
    """

    item_ids: np.ndarray
    categories: np.ndarray
    brands: np.ndarray
    prices: np.ndarray
    category_codes: np.ndarray
    category_names: tuple[str, ...]
    _rows: dict[str, int] = dataclasses.field(repr=False)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Catalogue:
        """Builds the catalogue from a frame with the ``items.csv`` columns.

        Raises:
          ValueError: an item id appears twice.
        """
        item_ids = frame[features.ITEM_ID].astype(str).to_numpy(dtype=object)
        rows = {item_id: row for row, item_id in enumerate(item_ids)}
        if len(rows) != len(item_ids):
            raise ValueError(f"{features.ITEMS_FILE} has duplicate {features.ITEM_ID}s")
        categories = frame[features.CATEGORY].astype(str).to_numpy(dtype=object)
        names, codes = np.unique(categories.astype(str), return_inverse=True)
        return cls(
            item_ids=item_ids,
            categories=categories,
            brands=frame[features.BRAND].astype(str).to_numpy(dtype=object),
            prices=frame[features.PRICE].astype(np.float64).to_numpy(),
            category_codes=codes.astype(np.int32),
            category_names=tuple(str(name) for name in names),
            _rows=rows,
        )

    @classmethod
    def load(cls, data_dir: str) -> Catalogue:
        """Reads ``<data_dir>/items.csv``."""
        return cls.from_frame(canonical.read_table(os.path.join(data_dir, features.ITEMS_FILE)))

    @functools.cached_property
    def utf8_item_ids(self) -> np.ndarray:
        """``[I]`` the item ids as UTF-8 ``bytes`` (an object array), as model requests carry them."""
        encoded = np.empty(len(self.item_ids), dtype=object)
        encoded[:] = [item_id.encode() for item_id in self.item_ids]
        return encoded

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._rows

    def row(self, item_id: str) -> int | None:
        """The row of an item, or None when it is not in the catalogue."""
        return self._rows.get(item_id)

    def rows(self, item_ids: Iterable[str]) -> tuple[np.ndarray, list[str]]:
        """Looks items up, keeping their order.

        Returns:
          ``(rows, unknown)``: int64 rows of the known ids, and the ids not in the catalogue.
        """
        known: list[int] = []
        unknown: list[str] = []
        for item_id in item_ids:
            row = self._rows.get(item_id)
            if row is None:
                unknown.append(item_id)
            else:
                known.append(row)
        return np.asarray(known, dtype=np.int64), unknown

    def rows_or_missing(self, item_ids: Sequence[str]) -> np.ndarray:
        """int64 rows of ``item_ids``, in order, with -1 for ids not in the catalogue."""
        rows = self._rows
        return np.fromiter((rows.get(item_id, -1) for item_id in item_ids), np.int64, len(item_ids))
