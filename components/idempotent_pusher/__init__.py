"""TFX's Pusher that does not push a model identical to the version already being served."""

from components.idempotent_pusher.executor import Executor, latest_version, model_digest  # noqa: F401
