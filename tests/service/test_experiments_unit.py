"""The service's experiments without servers: loading and refusing experiment files, hash
assignment (deterministic, balanced), arms as routing, the bandit's feedback loop, and the
exposure records in the SQLite and Redis event logs (durable, idempotent, exported, attributed)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from experiments import analyze
from experiments.assignment import Assigner
from experiments.config import ExperimentConfigError, load_experiment
from experiments.exposure import ATTRIBUTED_EVENTS_FILE, EXPOSURES_FILE, Exposure
from service import event_log
from service.event_log import LoggedEvent, SqliteEventLog
from service.experiments import (
    LiveExperiment,
    build_live_experiments,
    load_experiment_configs,
)
from service.strategy import retrievers
from service.strategy.catalogue import Catalogue
from service.strategy.ranking import RetrievalScoreRanker
from service.strategy.service import RecommendationService, RecommendRequest
from shoprec import features
from tests.service.redis_server import DURABLE, RedisServer
from tests.service.test_strategy import ITEMS, FakeGateway, fake_service

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "experiments" / "examples"
AB = EXAMPLES / "home_model_vs_popularity.yaml"


class SentinelRanker(RetrievalScoreRanker):
    """The base service's ranking stage, told apart from the popularity arm's."""

    name = "sentinel"


def base_service() -> RecommendationService:
    """The tiny shop's service (tests.service.test_strategy) on a fake model, with a ranker to tell apart."""
    service, _ = fake_service(Catalogue.from_frame(ITEMS), FakeGateway(["i5", "i6", "i2", "i7", "i3"]))
    return service.with_routing(service.routing, SentinelRanker())


def experiment_file(folder: Path, name: str = "ab", **changes: object) -> Path:
    raw = {"name": name, "salt": f"{name}-salt", "scenes": ["home"], "primary_metric": "ctr",
           "sample_size_per_arm": 100,
           "arms": [{"name": "control", "weight": 0.5, "kind": "strategy", "value": "popularity"},
                    {"name": "treatment", "weight": 0.5, "kind": "strategy", "value": "personalized"}]}
    raw.update(changes)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(raw))
    return path


def test_assignment_is_the_salted_hash_deterministic_and_balanced() -> None:
    live = build_live_experiments(str(AB), base_service())  # type: ignore[arg-type]
    assert live is not None
    config = load_experiment(str(AB))
    assigner = Assigner.from_config(config)
    users = [f"user-{n}" for n in range(20_000)]
    arms = [live.decide(user, "home").arm for user in users]  # type: ignore[union-attr]
    assert arms == [assigner.assign(user) for user in users]  # the library's hash, not another
    assert arms == [live.decide(user, "home").arm for user in users]  # type: ignore[union-attr]
    again = build_live_experiments(str(AB), base_service())  # a restart, another replica
    assert arms == [again.decide(user, "home").arm for user in users]  # type: ignore[union-attr]
    counts = [arms.count("control"), arms.count("treatment")]
    assert scipy_stats.chisquare(counts).pvalue > 0.001, counts
    assert abs(counts[0] / len(users) - 0.5) < 0.015, counts
    assert {live.decide(user, "home").propensity for user in users[:100]} == {0.5}  # type: ignore[union-attr]
    assert live.decide("user-1", "cart") is None  # the experiment is on home only


def test_a_new_salt_reshuffles_users_independently(tmp_path: Path) -> None:
    one = build_live_experiments(str(experiment_file(tmp_path, "one")), base_service())
    two = build_live_experiments(str(experiment_file(tmp_path, "two")), base_service())
    users = [f"u{n}" for n in range(4000)]
    first = np.array([one.decide(u, "home").arm == "treatment" for u in users])  # type: ignore[union-attr]
    second = np.array([two.decide(u, "home").arm == "treatment" for u in users])  # type: ignore[union-attr]
    table = [[np.sum(first & second), np.sum(first & ~second)], [np.sum(~first & second), np.sum(~first & ~second)]]
    assert scipy_stats.chi2_contingency(table).pvalue > 0.001  # independent splits


def test_arms_are_routing_tables() -> None:
    base = base_service()
    live = LiveExperiment(load_experiment(str(AB)), base)  # type: ignore[arg-type]
    assert live.services["treatment"] is base  # personalized: the service's own (model-based) table
    popularity = live.services["control"].routing
    assert {route.route for scene in popularity.scenes.values() for route in scene.routes} == {"popularity"}
    assert set(popularity.scenes) == set(base.routing.scenes)
    assert all(scene.fallback is None for scene in popularity.scenes.values())
    assert type(live.services["control"]._ranker) is RetrievalScoreRanker  # popularity order kept
    assert isinstance(base._ranker, SentinelRanker)
    assert base.routing.scenes["home"].routes[0].route == retrievers.TWO_TOWER  # the base is untouched


def test_a_routing_table_arm_reads_its_file_relative_to_the_experiment(tmp_path: Path) -> None:
    (tmp_path / "similar.json").write_text(json.dumps({"scenes": {"home": {"routes": [{"route": "similar"}],
                                                                           "fallback": "popularity"}}}))
    path = experiment_file(tmp_path, arms=[
        {"name": "control", "weight": 0.5, "kind": "strategy", "value": "personalized"},
        {"name": "similar", "weight": 0.5, "kind": "routing_table", "value": "similar.json"}])
    live = LiveExperiment(load_experiment(str(path)), base_service())  # type: ignore[arg-type]
    assert live.services["similar"].routing.scenes["home"].routes[0].route == "similar"


def test_a_model_arm_asks_its_own_model_and_says_so(tmp_path: Path) -> None:
    path = experiment_file(tmp_path, arms=[
        {"name": "control", "weight": 0.5, "kind": "strategy", "value": "personalized"},
        {"name": "candidate", "weight": 0.25, "kind": "model", "value": "retrieval_v2"},
        {"name": "again", "weight": 0.25, "kind": "model", "value": "retrieval_v2"}])
    made: list[FakeGateway] = []

    def new_gateway(name: str) -> FakeGateway:
        made.append(FakeGateway(["i7", "i3", "i2"], model_name=name))  # another model: another ranking
        return made[-1]

    base = base_service()
    live = build_live_experiments(str(path), base, new_gateway=new_gateway)  # type: ignore[arg-type]
    assert live is not None and [gateway.model_name for gateway in made] == ["retrieval_v2"]  # one per name
    assert live.gateways == tuple(made)  # the service polls and closes them
    arm = live.experiments[0].services["candidate"]
    request = RecommendRequest(user_id="u1", scene="home", k=2, diversity=0.0)
    answer, own = arm.recommend(request), base.recommend(request)
    assert [item.item_id for item in answer.items] == ["i7", "i3"] and answer.model_name == "retrieval_v2"
    assert [item.item_id for item in own.items] == ["i5", "i6"] and own.model_name is None  # the base is untouched
    assert made[0].histories and {item.route for item in answer.items} == {retrievers.TWO_TOWER}
    assert isinstance(arm._ranker, SentinelRanker) and arm.routing is base.routing  # only the model differs


@pytest.mark.parametrize(("change", "fragments"), [
    ({"arms": [{"name": "control", "weight": 0.7, "kind": "strategy", "value": "popularity"},
               {"name": "treatment", "weight": 0.7, "kind": "strategy", "value": "personalized"}]},
     ["ab.json", "arms[].weight", "sum to 1"]),
    ({"arms": [{"name": "control", "weight": 0.5, "kind": "strategy", "value": "popularity"},
               {"name": "treatment", "weight": 0.5, "kind": "strategy", "value": "ranker"}]},
     ["ab.json", "arms[1].value", "no strategy 'ranker'", "personalized, popularity"]),
    ({"arms": [{"name": "control", "weight": 0.5, "kind": "strategy", "value": "popularity"},
               {"name": "treatment", "weight": 0.5, "kind": "model", "value": "other_model"}]},
     ["ab.json", "arms[1]", "model arm 'other_model' needs a model server"]),
    ({"arms": [{"name": "control", "weight": 0.5, "kind": "strategy", "value": "popularity"},
               {"name": "treatment", "weight": 0.5, "kind": "model", "value": "models/../other"}]},
     ["ab.json", "arms[1].value", "'models/../other' is not a model name"]),
    ({"arms": [{"name": "control", "weight": 0.5, "kind": "strategy", "value": "popularity"},
               {"name": "treatment", "weight": 0.5, "kind": "routing_table", "value": "missing.json"}]},
     ["ab.json", "arms[1].value", "missing.json"]),
    ({"scenes": ["checkout"]}, ["ab.json", "scenes", "'checkout'", "cart, detail, home"]),
    ({"alpha": 0.7}, ["ab.json", "alpha"]),
    ({"colour": "blue"}, ["ab.json", "unknown keys ['colour']"]),
])
def test_a_malformed_experiment_is_refused_naming_file_and_field(tmp_path: Path, change: dict,
                                                                 fragments: list[str]) -> None:
    path = experiment_file(tmp_path, **change)
    with pytest.raises(ExperimentConfigError) as raised:
        build_live_experiments(str(path), base_service())  # type: ignore[arg-type]
    for fragment in fragments:
        assert fragment in str(raised.value), str(raised.value)


def test_missing_files_folders_and_clashes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ExperimentConfigError, match="nowhere.yaml: no such experiment file or folder"):
        load_experiment_configs(str(tmp_path / "nowhere.yaml"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExperimentConfigError, match="no experiment files"):
        load_experiment_configs(str(tmp_path / "empty"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ExperimentConfigError, match="extension must be"):
        load_experiment_configs(str(tmp_path / "notes.txt"))
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ExperimentConfigError, match="bad.yaml: not valid YAML"):
        load_experiment_configs(str(tmp_path / "bad.yaml"))
    folder = tmp_path / "two"
    folder.mkdir()
    experiment_file(folder, "first")
    experiment_file(folder, "second")  # also on home
    with pytest.raises(ExperimentConfigError, match="scene 'home' already has experiment 'first'"):
        build_live_experiments(str(folder), base_service())  # type: ignore[arg-type]
    assert load_experiment_configs(None) == [] and build_live_experiments(None, base_service()) is None
    assert [c.name for c in load_experiment_configs(str(EXAMPLES / "home_aa.json"))] == ["home_aa"]


def test_a_bandit_learns_from_clicks_attributed_by_request_id(tmp_path: Path) -> None:
    path = experiment_file(tmp_path, "bandit", allocation="thompson", scenes=[], horizon_days=5,
                           sample_size_per_arm=None)
    live = build_live_experiments(str(path), base_service(), seed=3)
    assert live is not None
    start = live.allocations()["bandit"]["home"]
    assert start == pytest.approx({"control": 0.5, "treatment": 0.5}, abs=0.05)
    for n in range(400):
        decision = live.decide(f"u{n % 7}", "home")
        assert decision is not None and 0.02 <= decision.propensity <= 0.98
        live.exposed(decision, f"r{n}", "home")
        if decision.arm == "treatment" and n % 3:  # treatment's slates get clicked
            live.observe(f"r{n}", features.CLICK)
            live.observe(f"r{n}", features.CLICK)  # a second click on one slate is no second reward
        live.observe(f"r{n}", features.IMPRESSION)
    learned = live.allocations()["bandit"]
    assert learned["home"]["treatment"] == pytest.approx(0.98, abs=0.01)  # all but control's 2% floor
    assert learned["cart"] == pytest.approx(start, abs=0.05)  # one bandit per scene
    live.observe("unknown-request", features.CLICK)  # ignored
    live.observe(None, features.CLICK)


def test_a_restarted_service_rebuilds_its_bandits_from_the_event_log(tmp_path: Path) -> None:
    path = experiment_file(tmp_path, "bandit", allocation="thompson", scenes=["home", "cart"], horizon_days=5,
                           sample_size_per_arm=None)
    live = build_live_experiments(str(path), base_service(), seed=3)
    assert live is not None
    logged: list[Exposure] = []
    events: list[tuple[str | None, str]] = []
    for n in range(300):
        scene = "home" if n % 4 else "cart"
        decision = live.decide(f"u{n}", scene)
        assert decision is not None
        live.exposed(decision, f"r{n}", scene)
        logged.append(Exposure(f"r{n}", f"u{n}", "bandit", decision.arm, scene, 1_700_000_000 + n,
                               decision.propensity))
        if decision.arm == "treatment" and n % 3:
            live.observe(f"r{n}", features.CLICK)
            events += [(f"r{n}", features.IMPRESSION), (f"r{n}", features.CLICK), (f"r{n}", features.CLICK)]
    logged.append(Exposure("r-old", "u-old", "bandit", "retired_arm", "home", 1_700_000_000, 0.5))
    logged.append(Exposure("r-other", "u-other", "another_experiment", "control", "home", 1_700_000_000, 0.5))
    events.append((None, features.CLICK))

    restarted = build_live_experiments(str(path), base_service(), seed=4)
    assert restarted is not None
    fresh = restarted.allocations()["bandit"]["home"]
    replayed = restarted.replay(logged, events)
    assert replayed.trials == 300 and replayed.skipped == 1
    assert replayed.rewards == sum(1 for request_id, kind in events if kind == features.CLICK) // 2
    bandit, rebuilt = live.experiments[0].bandit, restarted.experiments[0].bandit
    assert bandit is not None and rebuilt is not None
    for scene in ("home", "cart"):
        assert rebuilt.counts(scene) == bandit.counts(scene)  # the same successes and trials per arm
    assert restarted.allocations()["bandit"]["home"]["treatment"] > 0.9 > fresh["treatment"]
    unclicked = next(exposure.request_id for exposure in logged
                     if exposure.arm == "control" and exposure.scene == "home")
    restarted.observe(unclicked, features.CLICK)  # a click after the restart still rewards its arm
    assert rebuilt.counts("home")["control"][0] == bandit.counts("home")["control"][0] + 1


def exposure(n: int, **change: object) -> Exposure:
    values = dict(request_id=f"r{n}", user_id=f"u{n}", experiment="ab", arm="control" if n % 2 else "treatment",
                  scene="home", timestamp=1_700_000_000 + n, propensity=0.5)
    return Exposure(**{**values, **change})  # type: ignore[arg-type]


def test_sqlite_exposures_are_committed_idempotent_and_exported(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    log = SqliteEventLog(str(path))
    assert log.append_exposures([exposure(0), exposure(1)], received_at=1.0) == [True, True]
    assert log.append_exposures([exposure(1), exposure(2)], received_at=2.0) == [False, True]
    # Committed: another connection (another process after a crash) reads them back.
    other = sqlite3.connect(path)
    assert [row[0] for row in other.execute("SELECT request_id FROM exposures ORDER BY seq")] == ["r0", "r1", "r2"]
    other.close()
    impressions = [LoggedEvent(f"m{n}", f"u{n}", "i1", features.IMPRESSION, 1_700_000_010, f"s{n}", f"r{n}")
                   for n in range(3)]
    click = LoggedEvent("c0", "u0", "i1", features.CLICK, 1_700_000_020, "s0", "r0")
    assert log.append([*impressions, click], received_at=3.0) == [True] * 4
    log.close()
    reopened = SqliteEventLog(str(path))
    assert list(reopened.exposures()) == [exposure(0), exposure(1), exposure(2)]
    reopened.close()
    out = tmp_path / "export"
    summary = event_log.export(str(path), str(out))
    assert summary["exposures"] == 3
    exported = pd.read_csv(out / EXPOSURES_FILE, dtype={"request_id": str})
    assert list(exported["arm"]) == ["treatment", "control", "treatment"]
    attributed = pd.read_csv(out / ATTRIBUTED_EVENTS_FILE, dtype=str)
    assert set(attributed["request_id"]) == {"r0", "r1", "r2"}
    (out / features.ITEMS_FILE).write_text("item_id,category,brand,price\ni1,cat00,brand00,10.0\n")
    config = load_experiment(str(experiment_file(tmp_path, "ab")))
    requests = analyze.load_requests(config, str(out)).set_index("request_id")
    assert requests.loc["r0", "clicks"] == 1 and requests.loc["r2", "clicks"] == 0  # attributed by request id
    assert requests.loc["r1", "arm"] == "control" and requests.loc["r1", "impressions"] == 1


def test_sqlite_refuses_a_bad_exposure_row_alone(tmp_path: Path) -> None:
    log = SqliteEventLog(str(tmp_path / "events.sqlite"))
    with pytest.raises(event_log.EventLogError, match="exposure 0 .*cannot be logged") as raised:
        log.append_exposures([exposure(0, timestamp=2 ** 70)], received_at=1.0)
    assert raised.value.rejected
    assert list(log.exposures()) == []
    assert log.append_exposures([exposure(1)], received_at=1.0) == [True]
    log.close()


@pytest.fixture()
def durable_redis(tmp_path: Path):
    server = RedisServer(tmp_path / "redis", DURABLE).start()
    yield server
    server.stop()


def test_redis_exposures_are_idempotent_and_survive_a_sigkill_of_redis(durable_redis: RedisServer) -> None:
    from service.event_log_redis import RedisStreamEventLog

    log = RedisStreamEventLog(durable_redis.url)
    assert log.append_exposures([exposure(0), exposure(1), exposure(0)], received_at=1.0) == [True, True, False]
    assert log.append_exposures([exposure(1), exposure(2, propensity=0.125)], received_at=2.0) == [False, True]
    log.close()
    durable_redis.kill()  # only the fsynced AOF is left
    durable_redis.start()
    reopened = RedisStreamEventLog(durable_redis.url)
    assert list(reopened.exposures()) == [exposure(0), exposure(1), exposure(2, propensity=0.125)]
    assert reopened.counts() == {}  # exposures are not events
    with pytest.raises(event_log.EventLogError, match="empty request_id") as raised:
        reopened.append_exposures([exposure(3), exposure(4, request_id="")], received_at=3.0)
    assert raised.value.rejected and len(list(reopened.exposures())) == 3  # all or none
    reopened.close()


def test_the_experiments_flag_and_its_environment_variable() -> None:
    from service.settings import EXPERIMENTS_ENV, build_parser, settings_from_args

    parser = build_parser()
    assert settings_from_args(parser.parse_args(["--data_dir", "d"]), {}).experiments is None
    from_env = settings_from_args(parser.parse_args(["--data_dir", "d"]), {EXPERIMENTS_ENV: "exp/"})
    assert from_env.experiments == "exp/"
    flag = settings_from_args(parser.parse_args(["--data_dir", "d", "--experiments", "a.yaml"]),
                              {EXPERIMENTS_ENV: "exp/"})
    assert flag.experiments == "a.yaml"  # the flag wins
