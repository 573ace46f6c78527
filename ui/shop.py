"""The shop the Recommend page shows: users, items and history from a run's canonical files.

The files are ``<run_dir>/data/{users,items,events}.csv`` (``docs/data_schema.md``). They are
optional: against a deployed service without a run folder the page asks for ids instead.
"""

from __future__ import annotations

import dataclasses
import os
import uuid

import pandas as pd

from shoprec import features

DATA_SUBDIR = "data"
SAMPLE_USERS = 5


@dataclasses.dataclass(frozen=True)
class Shop:
    """A shop's canonical files, read once.

    Attributes:
      users: ``users.csv`` (user_id, age_group).
      items: ``items.csv`` indexed by item_id (category, brand, price).
      events: ``events.csv`` sorted by timestamp.
    """

    users: pd.DataFrame
    items: pd.DataFrame
    events: pd.DataFrame

    def knows_user(self, user_id: str) -> bool:
        """Whether ``user_id`` is in users.csv."""
        return bool((self.users[features.USER_ID] == user_id).any())

    def sample_users(self, n: int = SAMPLE_USERS) -> list[str]:
        """The ``n`` users with the most events (ties by id): users with a history worth seeing."""
        counts = self.events[self.events[features.USER_ID].isin(self.users[features.USER_ID])]
        ranked = counts.groupby(features.USER_ID).size().reset_index(name="n")
        ranked = ranked.sort_values(["n", features.USER_ID], ascending=[False, True])
        return ranked[features.USER_ID].head(n).tolist()

    def price_range(self) -> tuple[float, float]:
        """The lowest and highest price in the catalogue."""
        prices = self.items[features.PRICE]
        return float(prices.min()), float(prices.max())

    def item_label(self, item_id: str) -> str:
        """``i12 · cat07 · brand09 · 54.54`` (just the id for an unknown item)."""
        if item_id not in self.items.index:
            return item_id
        row = self.items.loc[item_id]
        return (f"{item_id} · {row[features.CATEGORY]} · {row[features.BRAND]} · "
                f"{float(row[features.PRICE]):.2f}")

    def history(self, user_id: str, n: int = 10) -> pd.DataFrame:
        """The user's latest ``n`` events of the files, newest first, with the item's category and brand."""
        events = self.events[self.events[features.USER_ID] == user_id].tail(n).iloc[::-1]
        joined = events.join(self.items, on=features.ITEM_ID)
        joined = joined.assign(**{"time": pd.to_datetime(joined[features.TIMESTAMP], unit="s", utc=True)})
        return joined[["time", features.ITEM_ID, features.EVENT_TYPE, features.CATEGORY, features.BRAND,
                       features.PRICE]].reset_index(drop=True)


def data_dir(run_dir: str) -> str:
    """``<run_dir>/data``."""
    return os.path.join(run_dir, DATA_SUBDIR)


def load_shop(run_dir: str) -> Shop | None:
    """The run's shop, or None when ``<run_dir>/data`` lacks one of the three files."""
    folder = data_dir(run_dir)
    paths = {name: os.path.join(folder, name) for name in (features.USERS_FILE, features.ITEMS_FILE,
                                                            features.EVENTS_FILE)}
    if not all(os.path.isfile(path) for path in paths.values()):
        return None
    users = pd.read_csv(paths[features.USERS_FILE], dtype={features.USER_ID: str})
    items = pd.read_csv(paths[features.ITEMS_FILE], dtype={features.ITEM_ID: str, features.CATEGORY: str,
                                                           features.BRAND: str}).set_index(features.ITEM_ID)
    events = pd.read_csv(paths[features.EVENTS_FILE], dtype={features.USER_ID: str, features.ITEM_ID: str,
                                                             features.EVENT_TYPE: str})
    return Shop(users=users, items=items, events=events.sort_values(features.TIMESTAMP, kind="stable"))


def new_user_id() -> str:
    """A fresh id no shop has: ``new-<12 hex digits>``."""
    return f"new-{uuid.uuid4().hex[:12]}"
