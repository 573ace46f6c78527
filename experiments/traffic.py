"""Runs simulated traffic through a backend and keeps what happened.

Two backends share one interface (``recommend(visits, k) -> Served``, ``send_events(events)``):

* :class:`InProcessBackend`: arms are Python policies, assigned by
  :class:`experiments.assignment.Assigner` (or a bandit), with the exposure records the
  service would write; fast enough for 1,000-run studies.
* :class:`experiments.http_backend.HttpBackend`: calls a running recommendation service.

:func:`run_traffic` loops over periods: draw visits, get slates, draw reactions, post events,
drift tastes. The :class:`TrafficLog` it returns gives per-user metrics and writes the
service's files (``events.csv`` with request ids, ``exposures.csv``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Protocol, Sequence

import numpy as np

from experiments.assignment import Assigner
from experiments.bandits import StrategyBandit
from experiments.exposure import EXPOSURE_COLUMNS, REQUEST_ID
from experiments.policies import Policy
from experiments.simulator import NO_ITEM, SCENES, Outcome, ShopSimulator, Visits
from shoprec import features
from shoprec.data.truth import BRAND_ID_FORMAT, CATEGORY_ID_FORMAT

NO_ARM = ""  # the arm of a request no experiment decided


@dataclasses.dataclass(frozen=True)
class Served:
    """What the backend answered for a batch of n visits.

    Attributes:
      slates: (n, k) int item indices, ``NO_ITEM`` where fewer than k came back.
      request_ids: (n,) object str request ids.
      arm: (n,) object str arm of each request (``NO_ARM`` when no experiment decided).
      experiment: (n,) object str experiment name ("" when none).
      propensity: (n,) float probability of the arm (NaN when none).
    """

    slates: np.ndarray
    request_ids: np.ndarray
    arm: np.ndarray
    experiment: np.ndarray
    propensity: np.ndarray


class Backend(Protocol):
    """Where slates come from and events go."""

    def recommend(self, visits: Visits, k: int) -> Served:
        """Slates for the visits."""

    def send_events(self, events: list[dict[str, object]]) -> None:
        """Delivers events (dicts of the ``POST /events`` body)."""

    def observe(self, visits: Visits, served: Served, outcome: Outcome) -> None:
        """Sees the outcome (bandit backends learn from it)."""


class InProcessBackend:
    """Arms as Python policies; a fixed hash split or a bandit chooses the arm.

    Args:
      simulator: gives user ids.
      experiment: the experiment's name.
      policies: policy of each arm, in the config's arm order.
      assigner: fixed split (exactly one of assigner and bandit).
      bandit: a bandit over the arm names (choices per request; learns from clicks).
    """

    def __init__(self, simulator: ShopSimulator, experiment: str, policies: Mapping[str, Policy],
                 assigner: Assigner | None = None, bandit: StrategyBandit | None = None) -> None:
        if (assigner is None) == (bandit is None):
            raise ValueError("give exactly one of assigner and bandit")
        self.arm_names = tuple(policies)
        chooser = assigner.arm_names if assigner is not None else bandit.arms  # type: ignore
        if tuple(chooser) != self.arm_names:
            raise ValueError(f"policies {self.arm_names} and arms {tuple(chooser)} differ")
        self.simulator = simulator
        self.experiment = experiment
        self.policies = [policies[name] for name in self.arm_names]
        self.assigner = assigner
        self.bandit = bandit
        self._arm_of_user: dict[int, int] = {}
        self._requests = 0

    def _fixed_arms(self, users: np.ndarray) -> np.ndarray:
        unseen = [u for u in np.unique(users).tolist() if u not in self._arm_of_user]
        if unseen:
            indices = self.assigner.arm_indices(self.simulator.user_ids[unseen])  # type: ignore
            self._arm_of_user.update(zip(unseen, indices.tolist()))
        return np.fromiter((self._arm_of_user[u] for u in users.tolist()), dtype=np.int64,
                           count=users.size)

    def recommend(self, visits: Visits, k: int) -> Served:
        """Chooses arms, then asks each arm's policy for its visits' slates."""
        n = len(visits)
        if self.assigner is not None:
            arm_index = self._fixed_arms(visits.user)
            propensity = np.asarray(self.assigner.weights)[arm_index]
        else:
            arm_index = np.empty(n, dtype=np.int64)
            propensity = np.empty(n)
            for i, scene in enumerate(visits.scene.tolist()):
                arm, propensity[i] = self.bandit.choose_with_propensity(SCENES[scene])  # type: ignore
                arm_index[i] = self.arm_names.index(arm)
        slates = np.full((n, k), NO_ITEM, dtype=np.int64)
        for index, policy in enumerate(self.policies):
            rows = np.flatnonzero(arm_index == index)
            if rows.size:
                slates[rows] = policy(visits.subset(rows), k)
        request_ids = np.array([f"{self.experiment}-{self._requests + i}" for i in range(n)],
                               dtype=object)
        self._requests += n
        return Served(slates, request_ids, np.asarray(self.arm_names, dtype=object)[arm_index],
                      np.full(n, self.experiment, dtype=object), propensity)

    def send_events(self, events: list[dict[str, object]]) -> None:
        """Nothing to send: the log keeps the events."""

    def observe(self, visits: Visits, served: Served, outcome: Outcome) -> None:
        """A bandit learns reward 1 for a slate with at least one click."""
        if self.bandit is None:
            return
        rewards = outcome.clicks.any(axis=1)
        for scene, arm, reward in zip(visits.scene.tolist(), served.arm.tolist(), rewards.tolist()):
            self.bandit.update(SCENES[scene], arm, float(reward))


@dataclasses.dataclass
class TrafficLog:
    """Everything that happened, one row per request.

    Attributes:
      visits: the n visits, in order.
      served: the backend's answers.
      outcome: the reactions.
      expected: (n,) expected clicks per request under the truth at that time.
    """

    visits: Visits
    served: Served
    outcome: Outcome
    expected: np.ndarray

    def per_request(self) -> dict[str, np.ndarray]:
        """(n,) arrays: user, arm, scene, period, impressions, clicks, purchases, revenue."""
        return {
            "user": self.visits.user, "arm": self.served.arm, "scene": self.visits.scene,
            "period": self.visits.period,
            "impressions": (self.served.slates != NO_ITEM).sum(axis=1),
            "clicks": self.outcome.clicks.sum(axis=1),
            "purchases": self.outcome.purchases.sum(axis=1),
            "revenue": self.outcome.revenue,
        }

    def write(self, out_dir: str, simulator: ShopSimulator) -> dict[str, str]:
        """Writes ``events.csv`` (canonical columns + request_id), ``exposures.csv``, ``items.csv``.

        Returns:
          Paths by file name.
        """
        import pandas as pd

        from experiments.exposure import EXPOSURES_FILE

        os.makedirs(out_dir, exist_ok=True)
        events = pd.DataFrame(build_events(self.visits, self.served, self.outcome, simulator))
        event_columns = [column.name for column in features.EVENT_COLUMNS] + [REQUEST_ID]
        paths = {features.EVENTS_FILE: os.path.join(out_dir, features.EVENTS_FILE),
                 EXPOSURES_FILE: os.path.join(out_dir, EXPOSURES_FILE)}
        events[event_columns].to_csv(paths[features.EVENTS_FILE], index=False,
                                     lineterminator="\n")
        decided = self.served.arm != NO_ARM
        exposures = pd.DataFrame(dict(zip(EXPOSURE_COLUMNS, (
            self.served.request_ids[decided], simulator.user_ids[self.visits.user[decided]],
            self.served.experiment[decided], self.served.arm[decided],
            np.asarray(SCENES, dtype=object)[self.visits.scene[decided]],
            self.visits.timestamp[decided], self.served.propensity[decided]))))
        exposures.to_csv(paths[EXPOSURES_FILE], index=False, lineterminator="\n")
        truth = simulator.truth
        values = {features.ITEM_ID: simulator.item_ids,
                  features.CATEGORY: [CATEGORY_ID_FORMAT.format(c) for c in truth.item_category],
                  features.BRAND: [BRAND_ID_FORMAT.format(b) for b in truth.item_brand],
                  features.PRICE: truth.item_price}
        paths[features.ITEMS_FILE] = os.path.join(out_dir, features.ITEMS_FILE)
        pd.DataFrame({column.name: values[column.name] for column in features.ITEM_COLUMNS}).to_csv(
            paths[features.ITEMS_FILE], index=False, lineterminator="\n")
        return paths


_CLICK_DELAY_S, _CART_DELAY_S, _PURCHASE_DELAY_S = 10, 30, 60


def build_events(visits: Visits, served: Served, outcome: Outcome,
                 simulator: ShopSimulator) -> dict[str, list[object]]:
    """Events as columns: an impression per shown slot, clicks, and cart + purchase per buy.

    Returns:
      Column lists: event id, user id, item id, event type, timestamp, session id (the
      request id) and request id.
    """
    columns: dict[str, list[object]] = {name: [] for name in (
        features.EVENT_ID, features.USER_ID, features.ITEM_ID, features.EVENT_TYPE,
        features.TIMESTAMP, features.SESSION_ID, REQUEST_ID)}
    shown = served.slates != NO_ITEM
    for event_type, mask, delay in ((features.IMPRESSION, shown, 0),
                                    (features.CLICK, outcome.clicks & shown, _CLICK_DELAY_S),
                                    (features.CART, outcome.purchases & shown, _CART_DELAY_S),
                                    (features.PURCHASE, outcome.purchases & shown,
                                     _PURCHASE_DELAY_S)):
        rows, slots = np.nonzero(mask)
        request_ids = served.request_ids[rows]
        columns[features.EVENT_ID] += [f"{r}-{s}-{event_type}" for r, s in
                                       zip(request_ids.tolist(), slots.tolist())]
        columns[features.USER_ID] += simulator.user_ids[visits.user[rows]].tolist()
        columns[features.ITEM_ID] += simulator.item_ids[served.slates[rows, slots]].tolist()
        columns[features.EVENT_TYPE] += [event_type] * rows.size
        columns[features.TIMESTAMP] += (visits.timestamp[rows] + delay).tolist()
        columns[features.SESSION_ID] += request_ids.tolist()
        columns[REQUEST_ID] += request_ids.tolist()
    return columns


def visit_plan(simulator: ShopSimulator, participants: np.ndarray, mean_visits: float,
               periods: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Visiting users per period: participant ``u`` visits ``1 + Poisson`` times in all.

    The Poisson mean is ``(mean_visits - 1) * activity(u) / mean activity`` (capped at 20x),
    and each visit falls in a uniform period.

    Returns:
      ``periods`` arrays of user indices (one entry per visit).
    """
    activity = simulator.truth.activity[participants]
    relative = np.minimum(activity / activity.mean(), 20.0)
    counts = 1 + rng.poisson(max(mean_visits - 1.0, 0.0) * relative)
    users = np.repeat(participants, counts)
    period = rng.integers(periods, size=users.size)
    return [users[period == p] for p in range(periods)]


def run_traffic(simulator: ShopSimulator, backend: Backend, rng: np.random.Generator,
                visits_per_period: Sequence[np.ndarray] | Sequence[int], k: int = 10,
                click_multiplier_by_arm: Mapping[str, float] | None = None,
                send_events: bool = False, reset: bool = True) -> TrafficLog:
    """Runs periods of traffic.

    Args:
      simulator: the users.
      backend: where slates come from.
      rng: random source.
      visits_per_period: per period, either the visiting users (array of user indices) or a
        number of visits to draw by activity.
      k: slate length.
      click_multiplier_by_arm: attraction multiplier per arm name (an injected lift).
      send_events: post each period's events to the backend.
      reset: restore the original tastes first.

    Returns:
      The log of all periods.
    """
    if reset:
        simulator.reset()
    multipliers = dict(click_multiplier_by_arm or {})
    planned = [plan for plan in visits_per_period if not isinstance(plan, (int, np.integer))]
    # Only the planned visitors' tastes matter to a planned run, so only they drift.
    participants = np.concatenate(planned) if len(planned) == len(visits_per_period) else None
    parts: list[tuple[Visits, Served, Outcome, np.ndarray]] = []
    for period, plan in enumerate(visits_per_period):
        if isinstance(plan, (int, np.integer)):
            visits = simulator.draw_visits(int(plan), rng, period=period)
        else:
            visits = simulator.draw_visits(len(plan), rng, period=period, users=plan)
        if len(visits):
            served = backend.recommend(visits, k)
            multiplier = np.array([multipliers.get(arm, 1.0) for arm in served.arm.tolist()])
            outcome = simulator.respond(visits, served.slates, rng, multiplier)
            expected = outcome.expected_clicks
            backend.observe(visits, served, outcome)
            if send_events:
                events = build_events(visits, served, outcome, simulator)
                backend.send_events([dict(zip(events, values)) for values in zip(*events.values())])
            parts.append((visits, served, outcome, expected))
        simulator.advance_period(rng, participants)
    if not parts:
        raise ValueError("no visits were simulated; give at least one visit")
    visits = Visits(*(np.concatenate([getattr(p[0], f.name) for p in parts])
                      for f in dataclasses.fields(Visits)))
    served = Served(*(np.concatenate([getattr(p[1], f.name) for p in parts])
                      for f in dataclasses.fields(Served)))
    outcome = Outcome(*(np.concatenate([getattr(p[2], f.name) for p in parts])
                        for f in dataclasses.fields(Outcome)))
    return TrafficLog(visits, served, outcome, np.concatenate([p[3] for p in parts]))
