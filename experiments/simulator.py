"""A shop simulator driven by the generated shop's hidden ground truth.

Users (from :class:`shoprec.data.truth.ShopTruth`) visit scenes (home, cart, detail). Each
visit gets a slate of ``k`` items from a *backend* (an in-process policy, or the real service
over HTTP, see :mod:`experiments.backends`), and the user reacts:

* **attraction** of item ``i`` to user ``u``: ``max_attraction * (1 - exp(-rel / saturation))``
  with ``rel = n_items * P(next click is i | u)`` from ``ShopTruth.item_scores`` (1 for an
  average item);
* **clicks** by a position-based model (slot ``j`` is examined with probability
  ``1 / (j + 1) ** examination_decay``, clicked if attractive) or a cascade model (the user
  scans down and clicks the first attractive item, then stops);
* **purchases** of clicked items with ``ShopTruth.purchase_probability`` (price sensitivity);
  revenue is the price;
* **drift**: between periods each user's category taste moves a share ``drift_rate``
  towards a fresh Dirichlet draw, so tastes change slowly.

Because the truth is known, every slate's expected clicks and revenue are computable
(:meth:`ShopSimulator.expected`), so every verdict can be checked.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from shoprec.data import truth as truth_lib

SCENES: tuple[str, ...] = ("home", "cart", "detail")
HOME, CART, DETAIL = SCENES
DEFAULT_SCENE_WEIGHTS: tuple[float, ...] = (0.5, 0.2, 0.3)
NO_ITEM = -1  # context item of a home visit; an item id the simulator does not know
PERIOD_S = 86_400  # one period is one day
START_TIMESTAMP = 1_672_531_200  # 2023-01-01T00:00:00Z, after the generated shop's events


@dataclasses.dataclass(frozen=True)
class ClickModel:
    """How users click a slate.

    Attributes:
      kind: ``position`` (position-based model) or ``cascade``.
      examination_decay: position-based model: slot ``j`` (0-based) is examined with
        probability ``1 / (j + 1) ** examination_decay``.
      max_attraction: attraction of an item the user loves most, in (0, 1].
      saturation: relative appeal (1 = average item) at which attraction reaches
        ``1 - 1/e`` of its maximum.
    """

    kind: Literal["position", "cascade"] = "position"
    examination_decay: float = 0.7
    max_attraction: float = 0.3
    saturation: float = 100.0

    def __post_init__(self) -> None:
        if self.kind not in ("position", "cascade"):
            raise ValueError(f"ClickModel.kind must be 'position' or 'cascade', got {self.kind!r}")
        if not 0 < self.max_attraction <= 1 or self.saturation <= 0 or self.examination_decay < 0:
            raise ValueError(f"need 0 < max_attraction <= 1, saturation > 0 and"
                             f" examination_decay >= 0, got {self}")

    def examination(self, k: int) -> np.ndarray:
        """(k,) probability that each slot is examined (position-based model)."""
        return 1.0 / np.arange(1, k + 1) ** self.examination_decay


@dataclasses.dataclass(frozen=True)
class Visits:
    """A batch of visits.

    Attributes:
      user: (n,) int user index.
      scene: (n,) int index into ``SCENES``.
      context_item: (n,) int item being viewed (detail) or in the cart, ``NO_ITEM`` on home.
      period: (n,) int period (day) of the visit.
      timestamp: (n,) int Unix seconds.
    """

    user: np.ndarray
    scene: np.ndarray
    context_item: np.ndarray
    period: np.ndarray
    timestamp: np.ndarray

    def __len__(self) -> int:
        return self.user.size

    def subset(self, mask: np.ndarray) -> "Visits":
        """The visits where ``mask`` (a bool array or an index array) selects."""
        return Visits(*(getattr(self, f.name)[mask] for f in dataclasses.fields(self)))


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What users did with their slates.

    Attributes:
      clicks: (n, k) bool, clicked slots.
      purchases: (n, k) bool, bought slots (a purchase follows a click).
      revenue: (n,) float, price of what was bought (shop currency).
      expected_clicks: (n,) expected clicks of these slates under the truth at the time.
    """

    clicks: np.ndarray
    purchases: np.ndarray
    revenue: np.ndarray
    expected_clicks: np.ndarray


@dataclasses.dataclass(frozen=True)
class Expected:
    """Expected reaction to given slates (from the truth).

    Attributes:
      clicks: (n,) expected clicks per request.
      any_click: (n,) probability of at least one click.
      revenue: (n,) expected revenue per request.
    """

    clicks: np.ndarray
    any_click: np.ndarray
    revenue: np.ndarray


class ShopSimulator:
    """Users of a shop's ground truth who visit scenes, see slates, click, buy and drift.

    Args:
      truth: the shop's hidden truth.
      click_model: how slates are clicked.
      scene_weights: (3,) share of visits per scene of ``SCENES``.
      drift_rate: share by which a user's category taste moves to a fresh draw per period.

    User ``n`` is ``u{n}`` and item ``n`` is ``i{n}``, as the generator writes them.
    """

    def __init__(self, truth: truth_lib.ShopTruth, click_model: ClickModel = ClickModel(),
                 scene_weights: tuple[float, ...] = DEFAULT_SCENE_WEIGHTS,
                 drift_rate: float = 0.0) -> None:
        if len(scene_weights) != len(SCENES) or min(scene_weights) < 0 or sum(scene_weights) <= 0:
            raise ValueError(f"scene_weights needs {len(SCENES)} non-negative shares for"
                             f" {SCENES}, got {scene_weights}")
        if not 0.0 <= drift_rate <= 1.0:
            raise ValueError(f"drift_rate must be in [0, 1], got {drift_rate}")
        self.truth = truth
        self.click_model = click_model
        self.scene_weights = np.asarray(scene_weights, dtype=np.float64) / sum(scene_weights)
        self.drift_rate = drift_rate
        self.user_ids = np.array([truth_lib.USER_ID_FORMAT.format(n) for n in range(truth.n_users)],
                                 dtype=object)
        self.item_ids = np.array([truth_lib.ITEM_ID_FORMAT.format(n) for n in range(truth.n_items)],
                                 dtype=object)
        self._item_index = {item_id: n for n, item_id in enumerate(self.item_ids)}
        self._log_price = np.log(truth.item_price / truth.price_reference)
        self._popularity_weight = truth.item_popularity ** truth.params.popularity_exponent
        self._category_totals = self._compute_category_totals()
        self._items_by_category = [np.flatnonzero(truth.item_category == c)
                                   for c in range(truth.n_categories)]
        self.category_weights = truth.category_weights.copy()

    @classmethod
    def from_shop_dir(cls, shop_dir: str, **kwargs: object) -> "ShopSimulator":
        """From a generated shop folder (reads ``<shop_dir>/truth/truth.npz``)."""
        import os

        from shoprec import features

        return cls(truth_lib.ShopTruth.load(os.path.join(shop_dir, features.TRUTH_DIR)),
                   **kwargs)  # type: ignore[arg-type]

    def _compute_category_totals(self, chunk: int = 2048) -> np.ndarray:
        """(n_users, n_categories) sum of item affinity per category (taste-independent)."""
        totals = np.empty((self.truth.n_users, self.truth.n_categories))
        for start in range(0, self.truth.n_users, chunk):
            users = np.arange(start, min(start + chunk, self.truth.n_users))
            affinity = self.truth.item_affinity(users)
            for category in range(self.truth.n_categories):
                totals[users, category] = affinity[:, self.truth.item_category == category].sum(1)
        return totals

    def reset(self) -> None:
        """Restores the users' original tastes (undoes drift)."""
        self.category_weights = self.truth.category_weights.copy()

    def advance_period(self, rng: np.random.Generator, users: np.ndarray | None = None) -> None:
        """Drifts category tastes by ``drift_rate`` towards a fresh Dirichlet draw.

        Args:
          rng: random source.
          users: (n,) the users to drift (default all); a run may drift only its participants.
        """
        if self.drift_rate == 0:
            return
        rows = np.arange(self.truth.n_users) if users is None else np.unique(users)
        alpha = self.truth.params.category_concentration  # per category, as draw_truth's prior
        gammas = rng.standard_gamma(alpha, size=(rows.size, self.truth.n_categories))
        totals = gammas.sum(axis=1, keepdims=True)
        current = self.category_weights[rows]
        fresh = np.where(totals > 0, gammas / np.where(totals > 0, totals, 1.0), current)
        self.category_weights[rows] = (1.0 - self.drift_rate) * current + self.drift_rate * fresh

    def item_index(self, item_ids: list[str]) -> np.ndarray:
        """(n,) item index of each id; ``NO_ITEM`` for ids the shop does not have."""
        return np.fromiter((self._item_index.get(item_id, NO_ITEM) for item_id in item_ids),
                           dtype=np.int64, count=len(item_ids))

    def relative_appeal(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """(n, k) ``n_items * P(next click is item | user)`` with current tastes; 0 for NO_ITEM.

        Args:
          users: (n,) user indices.
          slates: (n, k) item indices (``NO_ITEM`` allowed).
        """
        truth = self.truth
        items = np.where(slates == NO_ITEM, 0, slates)
        u = users[:, None]
        brand_affinity = (1.0 - truth.params.brand_mix) + (
            truth.params.brand_mix * truth.n_brands * truth.brand_weights[u, truth.item_brand[items]])
        affinity = (brand_affinity * np.exp(-truth.price_sensitivity[u] * self._log_price[items])
                    * self._popularity_weight[items])
        category = truth.item_category[items]
        score = self.category_weights[u, category] * affinity / self._category_totals[u, category]
        return np.where(slates == NO_ITEM, 0.0, truth.n_items * score)

    def attraction(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """(n, k) probability that the user would click each item if examined."""
        model = self.click_model
        appeal = self.relative_appeal(users, slates)
        return model.max_attraction * -np.expm1(-appeal / model.saturation)

    def click_probabilities(self, users: np.ndarray, slates: np.ndarray,
                            click_multiplier: float | np.ndarray = 1.0) -> np.ndarray:
        """(n, k) marginal probability of a click on each slot.

        Args:
          users: (n,) user indices.
          slates: (n, k) item indices.
          click_multiplier: scalar or (n,): multiplies the attraction (an injected lift).
        """
        attraction = np.minimum(1.0, self.attraction(users, slates)
                                * np.reshape(click_multiplier, (-1, 1)))
        if self.click_model.kind == "position":
            return attraction * self.click_model.examination(slates.shape[1])
        not_before = np.cumprod(1.0 - attraction, axis=1)
        return attraction * np.hstack([np.ones((len(users), 1)), not_before[:, :-1]])

    def expected(self, users: np.ndarray, slates: np.ndarray,
                 click_multiplier: float | np.ndarray = 1.0) -> Expected:
        """Expected clicks, P(any click) and revenue per request for the given slates."""
        probabilities = self.click_probabilities(users, slates, click_multiplier)
        any_click = (probabilities.sum(axis=1) if self.click_model.kind == "cascade"
                     else 1.0 - np.prod(1.0 - probabilities, axis=1))
        return Expected(probabilities.sum(axis=1), any_click,
                        (probabilities * self._purchase_value(users, slates)).sum(axis=1))

    def _purchase_value(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """(n, k) P(buy | click) x price; 0 for NO_ITEM."""
        items = np.where(slates == NO_ITEM, 0, slates)
        buy = self.truth.purchase_probability(np.broadcast_to(users[:, None], items.shape), items)
        return np.where(slates == NO_ITEM, 0.0, buy * self.truth.item_price[items])

    def respond(self, visits: Visits, slates: np.ndarray, rng: np.random.Generator,
                click_multiplier: float | np.ndarray = 1.0) -> Outcome:
        """Draws clicks and purchases for the visits' slates.

        Args:
          visits: n visits.
          slates: (n, k) item indices shown (``NO_ITEM`` slots are never clicked).
          rng: random source.
          click_multiplier: scalar or (n,) multiplier of the attraction.
        """
        users = visits.user
        attraction = np.minimum(1.0, self.attraction(users, slates)
                                * np.reshape(click_multiplier, (-1, 1)))
        if self.click_model.kind == "position":
            probabilities = attraction * self.click_model.examination(slates.shape[1])
            clicks = rng.random(slates.shape) < probabilities
            expected_clicks = probabilities.sum(axis=1)
        else:
            attractive = rng.random(slates.shape) < attraction
            first = np.argmax(attractive, axis=1)
            clicks = np.zeros(slates.shape, dtype=bool)
            rows = np.flatnonzero(attractive.any(axis=1))
            clicks[rows, first[rows]] = True
            expected_clicks = 1.0 - np.prod(1.0 - attraction, axis=1)
        items = np.where(slates == NO_ITEM, 0, slates)
        buy = self.truth.purchase_probability(np.broadcast_to(users[:, None], items.shape), items)
        purchases = clicks & (rng.random(slates.shape) < buy)
        revenue = (purchases * self.truth.item_price[items]).sum(axis=1)
        return Outcome(clicks, purchases, revenue, expected_clicks)

    def draw_visits(self, n_visits: int, rng: np.random.Generator, period: int = 0,
                    users: np.ndarray | None = None,
                    scenes: np.ndarray | None = None) -> Visits:
        """Draws visits of one period: users by activity, scenes by ``scene_weights``.

        The viewed (detail) or carted (cart) item is drawn from the user's current category
        taste, then by popularity within the category.

        Args:
          n_visits: visits to draw.
          rng: random source.
          period: the period (day) they fall in.
          users: (n,) int visiting users, if given (else drawn by activity).
          scenes: (n,) int scene of each visit, if given (else drawn by ``scene_weights``).
        """
        if users is None:
            users = rng.choice(self.truth.n_users, size=n_visits, p=self.truth.activity)
        users = np.asarray(users, dtype=np.int64)
        scene = (rng.choice(len(SCENES), size=users.size, p=self.scene_weights)
                 if scenes is None else np.asarray(scenes, dtype=np.int64))
        category = truth_lib.draw_columns(self.category_weights[users], np.arange(users.size),
                                          rng.random(users.size))
        context = np.full(users.size, NO_ITEM, dtype=np.int64)
        for c in np.unique(category):
            rows = np.flatnonzero((category == c) & (scene != SCENES.index(HOME)))
            if rows.size:
                members = self._items_by_category[c]
                weights = self.truth.item_popularity[members]
                context[rows] = rng.choice(members, size=rows.size, p=weights / weights.sum())
        timestamp = START_TIMESTAMP + period * PERIOD_S + rng.integers(PERIOD_S, size=users.size)
        return Visits(users, scene, context, np.full(users.size, period, dtype=np.int64),
                      timestamp.astype(np.int64))

    def population_visits(self, rng: np.random.Generator, visits_per_user: int = 1) -> tuple[
            Visits, np.ndarray]:
        """Every user ``visits_per_user`` times, with activity weights, for exact truths.

        Returns:
          ``(visits, weights)``: the visits and (n,) weights summing to 1 (activity share of the
          user x share of the visit's scene, so weighted means are population expectations).
        """
        users = np.repeat(np.arange(self.truth.n_users), visits_per_user * len(SCENES))
        scene = np.tile(np.arange(len(SCENES)), self.truth.n_users * visits_per_user)
        visits = self.draw_visits(users.size, rng, users=users, scenes=scene)
        weights = self.truth.activity[users] * self.scene_weights[scene] / visits_per_user
        return visits, weights / weights.sum()


def draw_shop_truth(config: "ShopConfig") -> truth_lib.ShopTruth:  # noqa: F821
    """The truth ``generate_shop(config)`` would draw (same users and items), without events.

    ``purchase_scale`` stays uncalibrated (``purchase_share / (1 - purchase_share)``): the
    generator calibrates it on its sampled clicks, which are not drawn here.
    """
    truth_seed, _ = np.random.SeedSequence(config.seed).spawn(2)
    return truth_lib.draw_truth(config, truth_lib.ProcessParams(),
                                np.random.default_rng(truth_seed))
