"""Experiments in the running service: which arm answers a ``/recommend``, and what it logs.

``--experiments PATH`` (or ``$SHOPREC_EXPERIMENTS``) names an experiment file or a folder of
them (every ``*.yaml``, ``*.yml`` and ``*.json`` in it; see :mod:`experiments.config`). Each
experiment applies to its ``scenes`` (all of the routing table's when empty); one scene has at
most one experiment, so every request has at most one arm.

* **Assignment**: a fixed split hashes the user id with the experiment's salt
  (:class:`experiments.assignment.Assigner`): the same user gets the same arm on every request,
  replica and restart; the propensity is the arm's weight. A bandit (``allocation: thompson``,
  ``ucb1`` or ``epsilon_greedy``) chooses per request and per scene
  (:class:`experiments.bandits.StrategyBandit`, 2% floor per arm), the propensity is its
  allocation probability, and a click on a slate it served is that arm's reward.
* **Arms**: ``kind: strategy`` with ``value`` ``personalized`` (the service's own routing table:
  the model-based two-tower, session, similar and complementary routes) or ``popularity`` (every
  scene served by the popularity route alone, in popularity order); ``kind: routing_table`` with
  ``value`` a routing table JSON file (:mod:`service.strategy.routing`); ``kind: model`` with
  ``value`` another retrieval model's name on the same model server (a second entry of its
  ``models.config``): the service's routing, with the model routes (``two_tower``, ``similar``)
  and the ranking stage's retrieval score asking that model through a gateway of its own. Every
  arm shares the catalogue, the feature store, the filters and (but for popularity) the ranking
  model; a strategy or routing-table arm also shares the retrieval model.
* **Exposure**: after the arm's slate is built, one :class:`experiments.exposure.Exposure`
  (request id, user, experiment, arm, scene, time, propensity) is committed to the event log
  with the events' guarantee (durable before the answer) and the response carries
  ``experiment``, ``arm`` and ``propensity``. Events posted with that ``request_id`` are
  attributed to the arm by ``python -m experiments.analyze`` on the log's export.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

from experiments.assignment import Assigner
from experiments.bandits import StrategyBandit
from experiments.config import ExperimentConfig, ExperimentConfigError, load_experiment
from experiments.exposure import Exposure
from service.strategy import retrievers
from service.strategy.model_gateway import ModelGateway
from service.strategy.ranking import RetrievalScoreRanker
from service.strategy.routing import RouteSpec, RoutingError, RoutingTable
from service.strategy.service import RecommendationService
from shoprec import features

EXPERIMENT_EXTENSIONS = (".yaml", ".yml", ".json")
PERSONALIZED = "personalized"  # the service's own (model-based) routing table
POPULARITY = "popularity"  # every scene served by the popularity route alone
SERVICE_STRATEGIES: tuple[str, ...] = (PERSONALIZED, POPULARITY)
BANDIT_FLOOR = 0.02  # least share of each arm's traffic under a bandit (analysis and OPE need it)
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a model arm's served model
_PENDING_CAPACITY = 200_000  # bandit requests remembered until their click (a few hundred bytes each)


def experiment_files(path: str) -> list[str]:
    """The experiment files at ``path``: the file itself, or a folder's ``*.yaml/*.yml/*.json``.

    Raises:
      ExperimentConfigError: nothing there, a file of another type, or a folder with no
        experiment file.
    """
    if os.path.isdir(path):
        files = sorted(name for extension in EXPERIMENT_EXTENSIONS
                       for name in glob.glob(os.path.join(glob.escape(path), f"*{extension}")))
        if not files:
            raise ExperimentConfigError(f"{path}: no experiment files (*{', *'.join(EXPERIMENT_EXTENSIONS)}) "
                                        f"in this folder")
        return files
    if not os.path.exists(path):
        raise ExperimentConfigError(f"{path}: no such experiment file or folder")
    return [path]


def load_experiment_configs(path: str | None) -> list[ExperimentConfig]:
    """Reads and validates every experiment at ``path`` (none when ``path`` is None).

    Raises:
      ExperimentConfigError: a file is missing or malformed (the message names file and field),
        two files share a name, or two experiments claim the same scene.
    """
    if not path:
        return []
    configs = [load_experiment(file) for file in experiment_files(path)]
    by_name: dict[str, ExperimentConfig] = {}
    for config in configs:
        if config.name in by_name:
            raise ExperimentConfigError(f"{config.source}: name: experiment {config.name!r} is also defined "
                                        f"in {by_name[config.name].source}")
        by_name[config.name] = config
    for config in configs:
        if config.allocation != "fixed" and len(config.arms) * BANDIT_FLOOR > 1.0:
            raise ExperimentConfigError(f"{config.source}: arms: a bandit keeps {BANDIT_FLOOR:.0%} of the "
                                        f"traffic per arm, so it can have at most {int(1 / BANDIT_FLOOR)} arms")
        for index, arm in enumerate(config.arms):
            if arm.kind == "strategy" and arm.value not in SERVICE_STRATEGIES:
                raise ExperimentConfigError(
                    f"{config.source}: arms[{index}].value: the service has no strategy {arm.value!r}; "
                    f"strategies: {', '.join(SERVICE_STRATEGIES)} (or kind: routing_table with a routing file)")
            if arm.kind == "model" and not MODEL_NAME_PATTERN.fullmatch(arm.value):
                raise ExperimentConfigError(
                    f"{config.source}: arms[{index}].value: {arm.value!r} is not a model name (letters, digits, "
                    f"'.', '_' and '-', as in the model server's models.config)")
    return configs


@dataclasses.dataclass(frozen=True)
class Decision:
    """The arm that answers one request.

    Attributes:
      experiment: the experiment's name.
      arm: the arm's name.
      propensity: the probability this arm had for this request, in (0, 1].
      service: the recommendation service of the arm (its routing).
    """

    experiment: str
    arm: str
    propensity: float
    service: RecommendationService


def popularity_table(base: RoutingTable) -> RoutingTable:
    """``base`` with every scene served by the popularity route alone (same diversity)."""
    scenes = {name: dataclasses.replace(scene, routes=(RouteSpec(retrievers.POPULARITY, 1.0),), fallback=None)
              for name, scene in base.scenes.items()}
    return RoutingTable(scenes, base.fusion_k, base.pool_size)


ModelGateways = Callable[[str], ModelGateway]
"""A retrieval model's gateway by its served name (one per name; the service polls and closes it)."""


class LiveExperiment:
    """One experiment's arms and how it chooses among them.

    Args:
      config: the validated experiment.
      base: the service's own recommendation service.
      seed: the bandit's random seed (None: fresh entropy).
      model_gateways: the gateway of a model arm's model, by name (needed only for model arms).

    Raises:
      ExperimentConfigError: an arm's routing table is unreadable or invalid, a scene of the
        experiment is not in the routing table, or a model arm has no ``model_gateways``.
    """

    def __init__(self, config: ExperimentConfig, base: RecommendationService, seed: int | None = None,
                 model_gateways: ModelGateways | None = None) -> None:
        self.config = config
        known_scenes = set(base.routing.scenes)
        unknown = sorted(set(config.scenes) - known_scenes)
        if unknown:
            raise ExperimentConfigError(f"{config.source}: scenes: {unknown} are not scenes of the routing "
                                        f"table ({', '.join(sorted(known_scenes))})")
        self.scenes = tuple(config.scenes) or tuple(sorted(known_scenes))
        self.services: dict[str, RecommendationService] = {}
        for index, arm in enumerate(config.arms):
            if arm.kind == "routing_table":
                self.services[arm.name] = base.with_routing(self._routing_file(arm.value, index, base))
            elif arm.kind == "model":
                if model_gateways is None:
                    raise ExperimentConfigError(f"{config.source}: arms[{index}]: model arm {arm.value!r} needs a "
                                                f"model server (the service was built without one)")
                self.services[arm.name] = base.with_model(model_gateways(arm.value))
            elif arm.value == POPULARITY:  # popularity-ordered: the ranking stage keeps the retrieval scores
                self.services[arm.name] = base.with_routing(popularity_table(base.routing), RetrievalScoreRanker())
            else:
                self.services[arm.name] = base
        self.assigner = Assigner.from_config(config) if config.allocation == "fixed" else None
        self.bandit = None if self.assigner is not None else StrategyBandit(
            config.arm_names, algorithm=config.allocation, floor=BANDIT_FLOOR, seed=seed)

    def _routing_file(self, path: str, index: int, base: RecommendationService) -> RoutingTable:
        if not os.path.isabs(path) and self.config.source:  # relative to the experiment file
            path = os.path.join(os.path.dirname(os.path.abspath(self.config.source)), path)
        known = {retrievers.TWO_TOWER, retrievers.SESSION, retrievers.COMPLEMENTARY, retrievers.SIMILAR,
                 retrievers.POPULARITY} | base.routing.route_names
        try:
            table = RoutingTable.load(path, known)
        except (OSError, RoutingError) as err:
            raise ExperimentConfigError(f"{self.config.source}: arms[{index}].value: routing table {path}: "
                                        f"{err}") from err
        missing = sorted(set(self.scenes) - set(table.scenes))
        if missing:
            raise ExperimentConfigError(f"{self.config.source}: arms[{index}].value: routing table {path} lacks "
                                        f"the experiment's scene(s) {missing}")
        return table

    def decide(self, user_id: str, scene: str) -> Decision:
        """The arm for this user on this scene, and its propensity."""
        if self.assigner is not None:
            index = self.assigner.arm_index(user_id)
            arm, propensity = self.config.arms[index].name, self.assigner.weights[index]
        else:
            assert self.bandit is not None
            arm, propensity = self.bandit.choose_with_propensity(scene)
        return Decision(self.config.name, arm, float(propensity), self.services[arm])


@dataclasses.dataclass(frozen=True)
class BanditReplay:
    """What :meth:`LiveExperiments.replay` rebuilt.

    Attributes:
      trials: exposures counted as bandit trials.
      rewards: trials rewarded by a logged click.
      skipped: exposures of an arm or scene the experiment no longer has.
    """

    trials: int
    rewards: int
    skipped: int


class LiveExperiments:
    """The service's experiments by scene, and the bandits' feedback loop.

    Args:
      experiments: the live experiments; two may not share a scene.
      gateways: the model arms' gateways, which the service polls and closes with its own.
    """

    def __init__(self, experiments: Sequence[LiveExperiment], gateways: Sequence[ModelGateway] = ()) -> None:
        self.experiments = tuple(experiments)
        self.gateways = tuple(gateways)
        self._by_scene: dict[str, LiveExperiment] = {}
        for experiment in self.experiments:
            for scene in experiment.scenes:
                other = self._by_scene.get(scene)
                if other is not None:
                    raise ExperimentConfigError(
                        f"{experiment.config.source}: scenes: scene {scene!r} already has experiment "
                        f"{other.config.name!r} ({other.config.source}); one experiment per scene")
                self._by_scene[scene] = experiment
        # Bandit requests awaiting their first click: request id -> (experiment, scene, arm).
        self._pending: collections.OrderedDict[str, tuple[LiveExperiment, str, str]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def decide(self, user_id: str, scene: str) -> Decision | None:
        """The arm that answers this request, or None when no experiment covers the scene."""
        experiment = self._by_scene.get(scene)
        return None if experiment is None else experiment.decide(user_id, scene)

    def exposed(self, decision: Decision, request_id: str, scene: str) -> None:
        """Called once the exposure is logged: a bandit counts the request as a trial."""
        experiment = self._by_scene.get(scene)
        if experiment is None or experiment.bandit is None or experiment.config.name != decision.experiment:
            return
        experiment.bandit.record_trial(scene, decision.arm)
        with self._lock:
            self._pending[request_id] = (experiment, scene, decision.arm)
            if len(self._pending) > _PENDING_CAPACITY:
                self._pending.popitem(last=False)

    def observe(self, request_id: str | None, event_type: str) -> None:
        """A logged event: a bandit's slate's first click is its arm's reward (once per request)."""
        if request_id is None or event_type != features.CLICK:
            return
        with self._lock:
            pending = self._pending.pop(request_id, None)
        if pending is not None:
            experiment, scene, arm = pending
            assert experiment.bandit is not None
            experiment.bandit.record_reward(scene, arm)

    def replay(self, exposures: Iterable[Exposure], events: Iterable[tuple[str | None, str]]) -> BanditReplay:
        """Rebuilds the bandits' state from the event log, as after a restart: every logged
        exposure of a bandit experiment counts as a trial of its arm, and the first click with its
        request id as the reward. Unclicked requests wait for their click again.

        Args:
          exposures: the logged exposures, in the order they were accepted.
          events: ``(request_id, event_type)`` of the logged events, in order.

        Returns:
          What was replayed; exposures of an arm or scene the experiment no longer has are skipped
          and counted.
        """
        trials = skipped = rewards = 0
        pending: dict[str, tuple[LiveExperiment, str, str]] = {}
        by_name = {experiment.config.name: experiment for experiment in self.experiments
                   if experiment.bandit is not None}
        for exposure in exposures:
            experiment = by_name.get(exposure.experiment)
            if experiment is None:
                continue
            if exposure.arm not in experiment.config.arm_names or exposure.scene not in experiment.scenes:
                skipped += 1
                continue
            assert experiment.bandit is not None
            experiment.bandit.record_trial(exposure.scene, exposure.arm)
            pending[exposure.request_id] = (experiment, exposure.scene, exposure.arm)
            trials += 1
        for request_id, event_type in events:
            if request_id is None or event_type != features.CLICK:
                continue
            entry = pending.pop(request_id, None)
            if entry is not None:
                experiment, scene, arm = entry
                assert experiment.bandit is not None
                experiment.bandit.record_reward(scene, arm)
                rewards += 1
        with self._lock:
            for request_id, entry in list(pending.items())[-_PENDING_CAPACITY:]:
                self._pending[request_id] = entry
            while len(self._pending) > _PENDING_CAPACITY:
                self._pending.popitem(last=False)
        return BanditReplay(trials, rewards, skipped)

    def allocations(self) -> Mapping[str, Mapping[str, Mapping[str, float]]]:
        """Each bandit's current allocation: experiment -> scene -> arm -> probability."""
        return {experiment.config.name: {scene: experiment.bandit.allocation(scene) for scene in experiment.scenes}
                for experiment in self.experiments if experiment.bandit is not None}


def build_live_experiments(path: str | None, base: RecommendationService, seed: int | None = None,
                           new_gateway: ModelGateways | None = None) -> LiveExperiments | None:
    """The experiments at ``path`` over the service's ``base`` recommendation service (None
    when no path is configured).

    Args:
      new_gateway: makes the gateway of a model arm's model by its served name; called once per
        name (None: model arms are refused).

    Raises:
      ExperimentConfigError: see :func:`load_experiment_configs` and :class:`LiveExperiment`.
    """
    configs = load_experiment_configs(path)
    if not configs:
        return None
    gateways: dict[str, ModelGateway] = {}

    def gateway(name: str) -> ModelGateway:
        assert new_gateway is not None
        if name not in gateways:
            gateways[name] = new_gateway(name)
        return gateways[name]

    model_gateways = gateway if new_gateway is not None else None
    live = [LiveExperiment(config, base, seed, model_gateways) for config in configs]
    return LiveExperiments(live, tuple(gateways.values()))
