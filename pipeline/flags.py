"""The flags both runners share: split, every hyper-parameter, blessing, caching (no TFX import).

``add_model_flags`` declares them from :mod:`shoprec.config` (one flag per ``TrainConfig`` field),
and ``configs_from_flags`` turns parsed flags back into the config objects ``create_pipeline``
takes, so the local and the Kubeflow runner cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses

from shoprec.config import (
    MODEL_NAME,
    RANKING_MODEL_NAME,
    EvalConfig,
    RankingConfig,
    SplitConfig,
    TrainConfig,
)


def parse_bool(text: str) -> bool:
    """``true/false``, ``1/0``, ``yes/no``, ``on/off`` -> bool (for argparse)."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# TrainConfig's annotations are strings (postponed evaluation).
_FLAG_TYPES = {"int": int, "float": float, "bool": parse_bool, "str": str}


# TrainConfig fields whose flag would clash with a runner's own (the local runner's --seed is the
# generated shop's): their flag gets a train_ prefix.
_CLASHING = frozenset({"seed"})


def _train_flag(name: str) -> str:
    """The flag (and argparse dest) of TrainConfig field ``name``."""
    return f"train_{name}" if name in _CLASHING else name


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """The split, hyper-parameter, blessing and caching flags."""
    group = parser.add_argument_group("model", "split, two-tower hyper-parameters, blessing")
    group.add_argument("--eval_fraction", type=float, default=SplitConfig.eval_fraction,
                       help="share of events, the latest, in the eval split (default: %(default)s)")
    group.add_argument("--history_length", type=int, default=SplitConfig.history_length,
                       help="behaviour-sequence length N (default: %(default)s)")
    for field in dataclasses.fields(TrainConfig):  # every hyper-parameter, e.g. --learning_rate
        group.add_argument(f"--{_train_flag(field.name)}", type=_FLAG_TYPES[field.type], default=field.default,
                           help=f"two-tower {field.name} (default: %(default)s)")
    group.add_argument("--min_ndcg", type=float, default=EvalConfig.min_blessing_value,
                       help="absolute floor on NDCG@10 for blessing (default: %(default)s)")
    group.add_argument("--bless_below_popularity", action="store_true",
                       help="do not require beating the popularity baseline (for smoke tests "
                            "on shops too small to learn from)")
    group.add_argument("--tuner_trials", type=int, default=0,
                       help="run a Tuner with this many trials before the Trainer (default: "
                            "%(default)s, no tuning)")
    group.add_argument("--model_name", default=MODEL_NAME)
    group.add_argument("--no_cache", action="store_true", help="rerun every component")
    group.add_argument("--infra_validation", type=parse_bool, default=None, metavar="{true,false}",
                       help="start the retrieval model in a model server and query it before the "
                            "Pusher (LocalInfraValidator; a refused model is not pushed); default: "
                            "false for the local runner (it adds a server start-up to every run), "
                            "true for the Kubeflow build")
    ranking = parser.add_argument_group("ranking", "the ranking branch: DCN-v2 click and purchase model "
                                                   "(docs/ranking.md)")
    ranking.add_argument("--no_ranking", action="store_true", help="leave the ranking branch out")
    for field in dataclasses.fields(RankingConfig):  # scalar fields, e.g. --ranking_epochs
        if field.type in _FLAG_TYPES:
            ranking.add_argument(f"--ranking_{field.name}", type=_FLAG_TYPES[field.type], default=field.default,
                                 help=f"ranking {field.name} (default: %(default)s)")
    ranking.add_argument("--ranking_model_name", default=RANKING_MODEL_NAME)


def configs_from_flags(args: argparse.Namespace) -> tuple[SplitConfig, TrainConfig, EvalConfig]:
    """The configs the flags describe.

    Raises:
      ValueError: a value the configs refuse (the message names it).
    """
    split = SplitConfig(eval_fraction=args.eval_fraction, history_length=args.history_length)
    train = TrainConfig(**{f.name: getattr(args, _train_flag(f.name)) for f in dataclasses.fields(TrainConfig)})
    evaluation = EvalConfig(min_blessing_value=args.min_ndcg, must_beat_popularity=not args.bless_below_popularity)
    return split, train, evaluation


def ranking_config_from_flags(args: argparse.Namespace) -> RankingConfig | None:
    """The ranking branch's config the flags describe; None with ``--no_ranking``.

    Raises:
      ValueError: a value RankingConfig refuses.
    """
    if args.no_ranking:
        return None
    return RankingConfig(**{f.name: getattr(args, f"ranking_{f.name}") for f in dataclasses.fields(RankingConfig)
                            if f.type in _FLAG_TYPES})
