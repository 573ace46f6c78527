"""The routing table: which retrieval routes serve each scene, how much each counts, the
fallback route, and the scene's default diversity.

The table is data (JSON), so a shop can add scenes or re-weight routes without code::

    {
      "fusion_k": 10,
      "pool_size": 200,
      "scenes": {
        "home":   {"routes": [{"route": "two_tower", "weight": 1.0},
                              {"route": "session", "weight": 0.6}],
                   "fallback": "popularity", "diversity": 0.2, "session_slots": 2},
        "cart":   {"routes": [{"route": "complementary", "weight": 1.0}], "fallback": "popularity"},
        "detail": {"routes": [{"route": "similar", "weight": 1.0},
                              {"route": "complementary", "weight": 0.5}], "fallback": "popularity"}
      }
    }

A scene may also name its ranking ``"objective"``: ``"click"`` (the default: order by predicted
click probability) or ``"revenue"`` (click probability times price), and ``"session_slots"``: how many
of the live session's best-ranked candidates move to the top of a model-ranked pool, ahead of
the diversity stage (default 0; home has 2; see ``service.strategy.ranking``).

``fusion_k`` is the constant of reciprocal-rank fusion (smaller: the top of each route counts
more); ``pool_size`` is how many candidates each route may contribute, and the size the fallback
route tops the pool up to.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping
from typing import Any

from service.strategy import retrievers

OBJECTIVES: tuple[str, ...] = ("click", "revenue")  # the ranking stage's (service.strategy.ranking)

HOME = "home"
CART = "cart"
DETAIL = "detail"

DEFAULT_ROUTING: dict[str, Any] = {
    "fusion_k": 10,
    "pool_size": 200,
    "scenes": {
        HOME: {"routes": [{"route": retrievers.TWO_TOWER, "weight": 1.0},
                          {"route": retrievers.SESSION, "weight": 0.6}],
               "fallback": retrievers.POPULARITY, "diversity": 0.2,  # bench/results/diversity.json
               "session_slots": 2},
        CART: {"routes": [{"route": retrievers.COMPLEMENTARY, "weight": 1.0}],
               "fallback": retrievers.POPULARITY, "diversity": 0.0},
        DETAIL: {"routes": [{"route": retrievers.SIMILAR, "weight": 1.0},
                            {"route": retrievers.COMPLEMENTARY, "weight": 0.5}],
                 "fallback": retrievers.POPULARITY, "diversity": 0.0},
    },
}


def _whole_number(value: Any, name: str) -> int:
    """``value`` as an int; a bool, a fraction or a string is refused (ValueError)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return value


class RoutingError(ValueError):
    """The routing table is malformed or names an unknown route."""


class UnknownSceneError(LookupError):
    """A request named a scene the routing table does not have."""

    def __init__(self, scene: str, valid: Collection[str]) -> None:
        super().__init__(f"unknown scene {scene!r}; valid scenes: {', '.join(sorted(valid))}")
        self.scene = scene
        self.valid = sorted(valid)


@dataclasses.dataclass(frozen=True)
class RouteSpec:
    """One route of a scene and its weight in the fusion."""

    route: str
    weight: float


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """How one scene is served.

    Attributes:
      name: the scene.
      routes: the primary routes, fused by weighted reciprocal rank.
      fallback: the route that tops the candidate pool up to ``pool_size``, ranked below every
        primary candidate: it fills lists the primary routes cannot (None: no fallback).
      diversity: the default diversity lambda of the scene, in [0, 1].
      objective: what the ranking stage orders by: ``click`` (predicted click probability) or
        ``revenue`` (click probability x price).
      session_slots: when the ranking model orders the list, this many best-ranked candidates of
        the ``session`` route (the live session) move to the top, ahead of the diversity stage
        (which may still space out similar ones); 0: none. The fused retrieval order needs none:
        the session route's weight counts there.
    """

    name: str
    routes: tuple[RouteSpec, ...]
    fallback: str | None
    diversity: float
    objective: str = "click"
    session_slots: int = 0


@dataclasses.dataclass(frozen=True)
class RoutingTable:
    """Scenes and their routes; see the module docstring for the JSON form."""

    scenes: Mapping[str, SceneSpec]
    fusion_k: float
    pool_size: int

    def scene(self, name: str) -> SceneSpec:
        """Returns a scene's spec.

        Raises:
          UnknownSceneError: with the list of valid scenes.
        """
        spec = self.scenes.get(name)
        if spec is None:
            raise UnknownSceneError(name, self.scenes)
        return spec

    @property
    def route_names(self) -> set[str]:
        """Every route any scene uses (fallbacks included)."""
        names = {route.route for scene in self.scenes.values() for route in scene.routes}
        return names | {scene.fallback for scene in self.scenes.values() if scene.fallback}

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], known_routes: Collection[str]) -> RoutingTable:
        """Parses and checks the JSON form.

        Raises:
          RoutingError: a missing or ill-typed field, an unknown route, a bad number.
        """
        try:
            fusion_k = float(document.get("fusion_k", DEFAULT_ROUTING["fusion_k"]))
            pool_size = int(document.get("pool_size", DEFAULT_ROUTING["pool_size"]))
            scenes = {}
            for name, scene in document["scenes"].items():
                routes = tuple(RouteSpec(str(entry["route"]), float(entry.get("weight", 1.0)))
                               for entry in scene["routes"])
                fallback = scene.get("fallback")
                scenes[str(name)] = SceneSpec(str(name), routes, str(fallback) if fallback else None,
                                              float(scene.get("diversity", 0.0)), str(scene.get("objective", "click")),
                                              _whole_number(scene.get("session_slots", 0), "session_slots"))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise RoutingError(f"malformed routing table: {err!r}") from err
        if not scenes:
            raise RoutingError("the routing table has no scenes")
        if fusion_k < 0 or pool_size < 1:
            raise RoutingError("fusion_k must be >= 0 and pool_size >= 1")
        for scene in scenes.values():
            if not 0.0 <= scene.diversity <= 1.0:
                raise RoutingError(f"scene {scene.name!r}: diversity must be in [0, 1]")
            if not scene.routes and not scene.fallback:
                raise RoutingError(f"scene {scene.name!r} has no routes")
            if any(route.weight <= 0 for route in scene.routes):
                raise RoutingError(f"scene {scene.name!r}: route weights must be positive")
            if scene.session_slots < 0:
                raise RoutingError(f"scene {scene.name!r}: session_slots must be >= 0, got {scene.session_slots}")
            if scene.session_slots and retrievers.SESSION not in {route.route for route in scene.routes}:
                raise RoutingError(f"scene {scene.name!r}: session_slots needs the {retrievers.SESSION!r} route "
                                   "among its routes")
            if scene.objective not in OBJECTIVES:
                raise RoutingError(f"scene {scene.name!r}: objective must be one of {', '.join(OBJECTIVES)}, "
                                   f"got {scene.objective!r}")
        table = cls(scenes, fusion_k, pool_size)
        unknown = table.route_names - set(known_routes)
        if unknown:
            raise RoutingError(f"unknown route(s) {', '.join(sorted(unknown))}; "
                               f"known routes: {', '.join(sorted(known_routes))}")
        return table

    @classmethod
    def load(cls, path: str, known_routes: Collection[str]) -> RoutingTable:
        """Reads the JSON form from a file.

        Raises:
          RoutingError: the file is not valid JSON or not a valid table.
          OSError: the file cannot be read.
        """
        with open(path, encoding="utf-8") as file:
            try:
                document = json.load(file)
            except json.JSONDecodeError as err:
                raise RoutingError(f"{path}: {err}") from err
        return cls.from_dict(document, known_routes)
