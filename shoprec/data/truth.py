"""Hidden ground truth of a synthetic shop: who likes what, and how likely each click and buy is.

The generator (:mod:`shoprec.data.generate`) first draws a :class:`ShopTruth` and then samples the
events from it. A simulator can reuse the same object to ask how likely a user is to click or buy
an item (:meth:`ShopTruth.item_scores`, :meth:`ShopTruth.purchase_probability`). The pipeline never
reads it: it is stored apart, under ``<shop>/truth/`` (see ``docs/data_schema.md``).

Model, for user ``u`` and item ``i`` of category ``c(i)``, brand ``b(i)`` and price ``p(i)``::

    affinity(u, i)  = popularity(i) ** popularity_exponent
                      * brand_affinity(u, b(i))
                      * (p(i) / price_reference) ** -price_sensitivity(u)
    brand_affinity  = (1 - brand_mix) + brand_mix * n_brands * brand_weights(u, b)
    P(i | u, c)     = affinity(u, i) / sum of affinity(u, j) over the items j of category c
    P(next click i | u) = category_weights(u, c(i)) * P(i | u, c(i))
    P(buy i | u clicked i) = min(1, purchase_scale * (p(i) / price_reference)
                                 ** -(purchase_price_exponent * price_sensitivity(u)))

Impressions (a recommendation slate showed item ``i`` to ``u`` at 0-based position ``k``, on a
page about an item of category ``c*``, or about none)::

    intent(u, c | c*) = slate_stickiness * [c == c*] + (1 - slate_stickiness) * category_weights(u, c)
                        (category_weights(u, c) on a page about no item)
    lift(u, i)        = n_items * intent(u, c(i) | c*) * P(i | u, c(i))
    P(click)          = position_bias(k) * click_ceiling * lift / (lift + click_half_lift)
    position_bias(k)  = (k + 1) ** -position_bias_exponent
    P(buy | click)    = P(buy i | u clicked i) above
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import zipfile
from typing import Sequence

import numpy as np

from shoprec import features
from shoprec.config import ShopConfig

TRUTH_ARRAYS_FILE = "truth.npz"  # every array of a ShopTruth; what ShopTruth.load reads

# Column names of the human-readable truth files (the canonical ones come from features).
PRICE_SENSITIVITY = "price_sensitivity"
ACTIVITY = "activity"
TOP_CATEGORY = "top_category"
TOP_CATEGORY_WEIGHT = "top_category_weight"
TOP_BRAND = "top_brand"
POPULARITY = "popularity"

# Id formats of the generated shop; the curated schema lists the category and brand domains.
USER_ID_FORMAT = "u{}"
ITEM_ID_FORMAT = "i{}"
CATEGORY_ID_FORMAT = "cat{:02d}"
BRAND_ID_FORMAT = "brand{:02d}"
SESSION_ID_FORMAT = "s{}"
EVENT_ID_FORMAT = "e{}"
IMPRESSION_ID_FORMAT = "m{}"
REQUEST_ID_FORMAT = "r{}"


@dataclasses.dataclass(frozen=True)
class ProcessParams:
    """Knobs of the generative process; the defaults give a learnable but non-trivial shop.

    Attributes:
      age_group_shares: share of users in each of ``features.AGE_GROUPS``.
      category_concentration: Dirichlet alpha per category of a user's category taste; small
        values concentrate a user on few categories.
      age_category_mix: share of a user's Dirichlet prior that comes from their age group's
        category prior (the rest is uniform), so the age group hints at the categories.
      brand_concentration: Dirichlet alpha per brand of a user's brand taste.
      brand_mix: weight of the brand taste in the brand affinity (0 = brands don't matter).
      category_brand_concentration: Dirichlet alpha of each category's brand mix over items.
      price_sensitivity_by_age: mean price sensitivity (price elasticity of the choice, unitless)
        of each age group; younger users are more sensitive.
      price_sensitivity_noise: std of a user's sensitivity around their age group's mean.
      max_price_sensitivity: sensitivities are clipped to ``[0, max_price_sensitivity]``.
      category_price_variance_share: share of the price variance that comes from the category's
        price level (the rest is within the category).
      category_size_sigma: lognormal sigma of the category sizes (share of items per category).
      popularity_sigma: lognormal sigma of item popularity (long tail).
      popularity_exponent: exponent ``a`` applied to popularity in the choice weight.
      activity_sigma: lognormal sigma of user activity (share of sessions per user).
      mean_session_clicks: mean clicks per session (geometric distribution, at least 1).
      max_session_clicks: clicks per session are capped here.
      category_stickiness: probability that a click stays in the session's category; otherwise
        its category is drawn afresh from the user's taste.
      mean_click_gap_s: mean of the exponential part of the gap between clicks, in seconds.
      min_click_gap_s: smallest gap between consecutive clicks of a session, in seconds.
      max_click_gap_s: largest gap between consecutive clicks of a session, in seconds.
      mean_purchase_delay_s: mean of the exponential part of click-to-purchase delay, seconds.
      min_purchase_delay_s: smallest click-to-purchase delay, in seconds (> 0).
      max_purchase_delay_s: largest click-to-purchase delay, in seconds.
      purchase_price_exponent: how much more price matters for buying than for clicking, as a
        multiple of the user's price sensitivity.
      slate_share: probability that a session was shown one recommendation slate.
      slate_size: items per slate.
      detail_slate_share: share of slates on a product page (``detail``, after one of the
        session's clicks, about that item); the rest are on ``home`` at the session's start.
      logging_category_share: the logging policy's share of choice weight on the page item's
        category (``detail``); the rest goes to the whole catalogue.
      logging_popularity_exponent: the logging policy weights items by popularity ** this.
      slate_stickiness: on a detail page, the weight of the page item's category in the user's
        intent (the rest is the user's category taste).
      click_ceiling: the click probability of a perfectly relevant item at position 0.
      click_half_lift: the lift over a uniform choice at which relevance is half the ceiling.
      position_bias_exponent: examination at 0-based position k is (k + 1) ** -this.
    """

    age_group_shares: tuple[float, ...] = (0.18, 0.30, 0.24, 0.16, 0.12)
    category_concentration: float = 0.15
    age_category_mix: float = 0.5
    brand_concentration: float = 0.5
    brand_mix: float = 0.7
    category_brand_concentration: float = 1.0
    price_sensitivity_by_age: tuple[float, ...] = (1.8, 1.4, 1.0, 0.7, 0.4)
    price_sensitivity_noise: float = 0.35
    max_price_sensitivity: float = 3.0
    category_price_variance_share: float = 0.25
    category_size_sigma: float = 0.4
    popularity_sigma: float = 1.2
    popularity_exponent: float = 1.0
    activity_sigma: float = 1.0
    mean_session_clicks: float = 3.0
    max_session_clicks: int = 20
    category_stickiness: float = 0.85
    mean_click_gap_s: float = 90.0
    min_click_gap_s: int = 5
    max_click_gap_s: int = 1800
    mean_purchase_delay_s: float = 60.0
    min_purchase_delay_s: int = 10
    max_purchase_delay_s: int = 900
    purchase_price_exponent: float = 0.5
    slate_share: float = 0.3
    slate_size: int = 10
    detail_slate_share: float = 0.6
    logging_category_share: float = 0.7
    logging_popularity_exponent: float = 0.5
    slate_stickiness: float = 0.85
    click_ceiling: float = 0.6
    click_half_lift: float = 8.0
    position_bias_exponent: float = 1.0


@dataclasses.dataclass(frozen=True, eq=False)
class ShopTruth:
    """The hidden tastes and item traits that generated a shop's events.

    Users and items are addressed by index: user ``n`` is ``u{n}``, item ``n`` is ``i{n}``,
    category ``n`` is ``cat{n:02d}`` and brand ``n`` is ``brand{n:02d}``.

    Attributes:
      params: the process knobs used.
      price_reference: price at which the price fit is 1 (the configured mean price).
      purchase_scale: base purchase probability per click, calibrated on the generated clicks
        so that purchases make up the configured share of events.
      user_age_group: (n_users,) int, index into ``features.AGE_GROUPS``.
      category_weights: (n_users, n_categories) float, each row sums to 1: the probability that
        a session (or a click that leaves the session's category) is in each category.
      brand_weights: (n_users, n_brands) float, each row sums to 1: brand taste.
      price_sensitivity: (n_users,) float >= 0, price elasticity of the user's choices.
      activity: (n_users,) float, sums to 1: probability that a session is the user's.
      item_category: (n_items,) int category index.
      item_brand: (n_items,) int brand index.
      item_price: (n_items,) float price, in the shop's currency, rounded to cents.
      item_popularity: (n_items,) float > 0, mean 1: the item's intrinsic appeal.
    """

    params: ProcessParams
    price_reference: float
    purchase_scale: float
    user_age_group: np.ndarray
    category_weights: np.ndarray
    brand_weights: np.ndarray
    price_sensitivity: np.ndarray
    activity: np.ndarray
    item_category: np.ndarray
    item_brand: np.ndarray
    item_price: np.ndarray
    item_popularity: np.ndarray

    @property
    def n_users(self) -> int:
        """Number of users."""
        return self.category_weights.shape[0]

    @property
    def n_items(self) -> int:
        """Number of items."""
        return self.item_price.shape[0]

    @property
    def n_categories(self) -> int:
        """Number of categories."""
        return self.category_weights.shape[1]

    @property
    def n_brands(self) -> int:
        """Number of brands."""
        return self.brand_weights.shape[1]

    def _log_relative_price(self) -> np.ndarray:
        """(n_items,) log of each price over the reference price."""
        return np.log(self.item_price / self.price_reference)

    def item_affinity(self, user_indices: np.ndarray,
                      item_indices: np.ndarray | None = None) -> np.ndarray:
        """Unnormalised choice weight of items for some users, within the item's category.

        Args:
          user_indices: (n,) int user indices.
          item_indices: (m,) int item indices, in the order wanted; default all items.

        Returns:
          (n, m) float > 0, C-ordered: popularity**a x brand affinity x price fit.
        """
        users = np.asarray(user_indices)
        items = np.arange(self.n_items) if item_indices is None else np.asarray(item_indices)
        brand_affinity = (1.0 - self.params.brand_mix) + (
            self.params.brand_mix * self.n_brands * self.brand_weights[users])
        # np.take keeps the result C-ordered (x[:, index] would not), which keeps it fast.
        affinity = np.take(brand_affinity, self.item_brand[items], axis=1)
        log_price = self._log_relative_price()[items]
        affinity *= np.exp(np.multiply.outer(-self.price_sensitivity[users], log_price))
        affinity *= self.item_popularity[items] ** self.params.popularity_exponent
        return affinity

    def item_scores(self, user_index: int | Sequence[int] | np.ndarray) -> np.ndarray:
        """Probability that a user's next click is on each item (ignoring session stickiness).

        This is what a simulator should use as "probability that user u clicks item i": the
        category is drawn from the user's taste, then the item within the category in proportion
        to :meth:`item_affinity`.

        Args:
          user_index: one user index, or a sequence of n of them.

        Returns:
          (n_items,) float summing to 1 for one user, or (n, n_items) for several.
        """
        users = np.atleast_1d(np.asarray(user_index))
        affinity = self.item_affinity(users)
        category_one_hot = np.eye(self.n_categories)[self.item_category]  # (n_items, C)
        category_totals = affinity @ category_one_hot  # (n, C)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_unit = np.where(category_totals > 0,
                                self.category_weights[users] / category_totals, 0.0)
        scores = affinity * np.take(per_unit, self.item_category, axis=1)
        return scores[0] if np.ndim(user_index) == 0 else scores

    def purchase_propensity(self, user_indices: np.ndarray,
                            item_indices: np.ndarray) -> np.ndarray:
        """Uncalibrated purchase appeal of clicked items: cheap items appeal to sensitive users.

        Args:
          user_indices: (n,) int user indices.
          item_indices: (n,) int item indices, the items those users clicked.

        Returns:
          (n,) float > 0, 1 at the reference price.
        """
        exponent = self.params.purchase_price_exponent * self.price_sensitivity[user_indices]
        return np.exp(-exponent * self._log_relative_price()[item_indices])

    def purchase_probability(self, user_indices: np.ndarray,
                             item_indices: np.ndarray) -> np.ndarray:
        """Probability that a click is followed by a purchase of the same item.

        Args:
          user_indices: (n,) int user indices.
          item_indices: (n,) int item indices, the items those users clicked.

        Returns:
          (n,) float in [0, 1].
        """
        propensity = self.purchase_propensity(user_indices, item_indices)
        return np.minimum(1.0, self.purchase_scale * propensity)

    def category_totals(self, user_indices: np.ndarray, chunk_cells: int = 2_000_000) -> np.ndarray:
        """(n, n_categories) sum of :meth:`item_affinity` over each category's items."""
        users = np.asarray(user_indices)
        totals = np.zeros((len(users), self.n_categories))
        one_hot = np.eye(self.n_categories)[self.item_category]  # (n_items, C)
        rows = max(1, chunk_cells // self.n_items)
        for start in range(0, len(users), rows):
            totals[start:start + rows] = self.item_affinity(users[start:start + rows]) @ one_hot
        return totals

    def position_bias(self, positions: np.ndarray) -> np.ndarray:
        """(n,) examination probability of 0-based slate positions, 1 at the top."""
        return (np.asarray(positions, np.float64) + 1.0) ** -self.params.position_bias_exponent

    def slate_click_probability(self, user_indices: np.ndarray, item_indices: np.ndarray,
                                positions: np.ndarray, context_categories: np.ndarray,
                                totals: np.ndarray | None = None) -> np.ndarray:
        """True probability that an impression is clicked (see the module docstring).

        Args:
          user_indices: (n,) int user of each impression.
          item_indices: (n,) int item shown.
          positions: (n,) int 0-based slot.
          context_categories: (n,) int category of the page's item, -1 on a page about no item.
          totals: (n, n_categories) :meth:`category_totals` of ``user_indices``, if known.

        Returns:
          (n,) float in [0, click_ceiling].
        """
        users, items = np.asarray(user_indices), np.asarray(item_indices)
        if totals is None:
            totals = self.category_totals(users)
        category = self.item_category[items]
        taste = self.category_weights[users, category]
        stickiness = self.params.slate_stickiness
        intent = np.where(np.asarray(context_categories) >= 0,
                          stickiness * (category == context_categories) + (1.0 - stickiness) * taste, taste)
        brand_affinity = (1.0 - self.params.brand_mix) + (
            self.params.brand_mix * self.n_brands * self.brand_weights[users, self.item_brand[items]])
        affinity = (brand_affinity * np.exp(-self.price_sensitivity[users] * self._log_relative_price()[items])
                    * self.item_popularity[items] ** self.params.popularity_exponent)
        lift = self.n_items * intent * affinity / totals[np.arange(len(users)), category]
        relevance = lift / (lift + self.params.click_half_lift)
        return self.position_bias(positions) * self.params.click_ceiling * relevance

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array field by name (what :meth:`save` stores)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if isinstance(getattr(self, field.name), np.ndarray)}

    def save(self, truth_dir: str) -> None:
        """Writes arrays, scalars and params to ``truth_dir/truth.npz``, reproducibly."""
        arrays = dict(self.arrays())
        arrays["price_reference"] = np.float64(self.price_reference)
        arrays["purchase_scale"] = np.float64(self.purchase_scale)
        arrays["params_json"] = np.array(json.dumps(dataclasses.asdict(self.params)))
        write_npz(os.path.join(truth_dir, TRUTH_ARRAYS_FILE), arrays)

    @classmethod
    def load(cls, truth_dir: str) -> "ShopTruth":
        """Reads a truth written by :meth:`save` from the ``<shop>/truth`` folder."""
        with np.load(os.path.join(truth_dir, TRUTH_ARRAYS_FILE)) as stored:
            values = {name: stored[name] for name in stored.files}
        params = {name: tuple(value) if isinstance(value, list) else value
                  for name, value in json.loads(str(values.pop("params_json"))).items()}
        return cls(params=ProcessParams(**params),
                   price_reference=float(values.pop("price_reference")),
                   purchase_scale=float(values.pop("purchase_scale")), **values)


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez`` but with fixed zip timestamps, so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)),
                             buffer.getvalue())


def _draw_assignment(rng: np.random.Generator, n_values: int, n_draws: int,
                     shares: np.ndarray) -> np.ndarray:
    """Draws (n_draws,) indices with the given shares, each of the first n_values once.

    Requires ``n_draws >= n_values``; the guaranteed first ones are in random order.
    """
    rest = rng.choice(n_values, size=n_draws - n_values, p=shares)
    return np.concatenate([rng.permutation(n_values), rest])


def draw_truth(config: ShopConfig, params: ProcessParams,
               rng: np.random.Generator) -> ShopTruth:
    """Draws users' hidden tastes and items' traits.

    Args:
      config: shop size and price range; needs ``items >= max(categories, brands)``.
      params: process knobs.
      rng: random source.

    Returns:
      The truth, with ``purchase_scale`` set to the uncalibrated share
      ``purchase_share / (1 - purchase_share)`` (the generator calibrates it on its clicks).

    Raises:
      ValueError: if a per-age-group knob does not have one value per age group.
    """
    n_ages, n_categories, n_brands = len(features.AGE_GROUPS), config.categories, config.brands
    for name in ("age_group_shares", "price_sensitivity_by_age"):
        if len(getattr(params, name)) != n_ages:
            raise ValueError(f"ProcessParams.{name} needs one value per age group"
                             f" {features.AGE_GROUPS}, got {getattr(params, name)}")

    # Items: category, brand (each category has its own brand mix), price, popularity.
    category_sizes = rng.lognormal(0.0, params.category_size_sigma, n_categories)
    item_category = _draw_assignment(rng, n_categories, config.items,
                                     category_sizes / category_sizes.sum())
    category_brand_mix = rng.dirichlet(np.full(n_brands, params.category_brand_concentration),
                                       size=n_categories)
    item_brand = np.concatenate([
        rng.permutation(n_brands),
        draw_rows(category_brand_mix, item_category[n_brands:], rng)])
    category_price_std = config.price_std * math.sqrt(params.category_price_variance_share)
    within_price_std = config.price_std * math.sqrt(1.0 - params.category_price_variance_share)
    category_offset = rng.normal(0.0, category_price_std, n_categories)
    category_offset -= category_offset[item_category].mean()  # keep the overall mean price
    raw_price = rng.normal(config.price_mean + category_offset[item_category], within_price_std)
    item_price = np.round(np.clip(raw_price, config.price_min, config.price_max), 2)
    popularity = rng.lognormal(0.0, params.popularity_sigma, config.items)

    # Users: age group, category taste (prior leans to the age group's), brand taste, price
    # sensitivity (by age group), activity.
    user_age_group = rng.choice(n_ages, size=config.users, p=np.asarray(params.age_group_shares))
    age_category_prior = rng.dirichlet(np.ones(n_categories), size=n_ages)
    prior = ((1.0 - params.age_category_mix) / n_categories
             + params.age_category_mix * age_category_prior[user_age_group])
    category_weights = _dirichlet_rows(rng, params.category_concentration * n_categories * prior)
    brand_weights = rng.dirichlet(np.full(n_brands, params.brand_concentration),
                                  size=config.users)
    sensitivity_mean = np.asarray(params.price_sensitivity_by_age)[user_age_group]
    price_sensitivity = np.clip(
        rng.normal(sensitivity_mean, params.price_sensitivity_noise),
        0.0, params.max_price_sensitivity)
    activity = rng.lognormal(0.0, params.activity_sigma, config.users)

    return ShopTruth(
        params=params,
        price_reference=config.price_mean,
        purchase_scale=config.purchase_share / (1.0 - config.purchase_share),
        user_age_group=user_age_group,
        category_weights=category_weights,
        brand_weights=brand_weights,
        price_sensitivity=price_sensitivity,
        activity=activity / activity.sum(),
        item_category=item_category,
        item_brand=item_brand,
        item_price=item_price,
        item_popularity=popularity / popularity.mean(),
    )


def _dirichlet_rows(rng: np.random.Generator, alphas: np.ndarray) -> np.ndarray:
    """(n, k) Dirichlet draws, one per row of (n, k) positive concentration parameters."""
    gammas = rng.standard_gamma(alphas)
    totals = gammas.sum(axis=1, keepdims=True)
    # A row whose gammas all underflow to 0 (tiny alphas) falls back to its largest alpha.
    fallback = np.eye(alphas.shape[1])[np.argmax(alphas, axis=1)]
    return np.where(totals > 0, gammas / np.where(totals > 0, totals, 1.0), fallback)


def draw_columns(weights: np.ndarray, rows: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Draws one column per entry of ``rows``, with probability proportional to that row's weights.

    All rows' CDFs go into one increasing array (row ``r`` shifted by ``r``), so a single
    ``np.searchsorted`` serves every draw.

    Args:
      weights: (n, K) non-negative weights with a positive sum in every row.
      rows: (m,) int row of each draw.
      uniforms: (m,) uniform numbers in [0, 1).

    Returns:
      (m,) int columns in [0, K).
    """
    n_rows, n_columns = weights.shape
    cdf = np.cumsum(weights, axis=1, dtype=np.float64)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    cdf += np.arange(n_rows)[:, None]
    columns = np.searchsorted(cdf.ravel(), rows + uniforms, side="right") - rows * n_columns
    return np.clip(columns, 0, n_columns - 1)


def draw_rows(probabilities: np.ndarray, rows: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """Draws one column per entry of ``rows`` from the categorical distribution in that row.

    Args:
      probabilities: (n, K) rows of non-negative weights with a positive sum.
      rows: (m,) int rows to draw from.
      rng: random source.

    Returns:
      (m,) int columns.
    """
    return draw_columns(probabilities, rows, rng.random(len(rows)))
