"""Who may write: API keys (bearer tokens) and per-key rate limits for the service's writes.

Keys come from ``--api_key_file`` (one per line, ``#`` starts a comment) or from
``$SHOPREC_API_KEYS`` (comma-separated); both may be given and are merged. With at least one key,
``POST /events`` (and any admin endpoint, through :meth:`Guard.check`) answers 401 unless the
request carries ``Authorization: Bearer <key>``. Without keys the service is keyless: it then
refuses to start on a non-loopback address unless ``--allow_unauthenticated`` is given (see
``docs/security.md``).

Each key (each client address when keyless) has a token bucket of ``rate_limit_burst`` writes,
refilled at ``rate_limit_per_second``. A write over the limit gets 429 with ``Retry-After`` (whole
seconds, at least 1). Reads (``/recommend``, ``/healthz``, ``/metrics``) need no key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import threading
import time
from collections.abc import Callable, Mapping

from service.errors import ApiError
from service.settings import API_KEY_ENV

MIN_KEY_CHARS = 16
_MAX_BUCKETS = 100_000  # keyless mode: client addresses remembered at most (oldest dropped)


def load_api_keys(path: str | None, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The configured API keys: those of the file and of ``$SHOPREC_API_KEYS``.

    Raises:
      OSError: the file cannot be read.
      ValueError: the file holds no key, or a key is shorter than 16 characters or has spaces.
    """
    keys: list[str] = []
    if path is not None:
        with open(path, encoding="utf-8") as handle:
            from_file = [line.split("#", 1)[0].strip() for line in handle]
        from_file = [key for key in from_file if key]
        if not from_file:
            raise ValueError(f"{path}: no API key in the file (one key per line)")
        keys.extend(from_file)
    keys.extend(key.strip() for key in environ.get(API_KEY_ENV, "").split(",") if key.strip())
    for key in keys:
        if len(key) < MIN_KEY_CHARS or any(character.isspace() for character in key):
            source = path if path is not None and key in from_file else f"${API_KEY_ENV}"
            raise ValueError(f"{source}: an API key must have at least {MIN_KEY_CHARS} characters and no "
                             f"spaces (found one of {len(key)} characters)")
    return tuple(dict.fromkeys(keys))


def key_label(key: str) -> str:
    """A short, non-secret name of a key for logs: the first 8 hex digits of its SHA-256."""
    return "key-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


@dataclasses.dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets, one per caller.

    Args:
      per_second: refill rate, requests per second.
      burst: bucket size, requests.
      clock: monotonic seconds (a test passes a fake clock).
    """

    def __init__(self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError(f"rate limit: per_second must be > 0 and burst >= 1 (got {per_second}, {burst})")
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, caller: str) -> float:
        """Takes one token of ``caller``'s bucket.

        Returns:
          0 when the request may proceed, else the seconds until a token is available.
        """
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(caller)
            if bucket is None:
                if len(self._buckets) >= _MAX_BUCKETS:
                    self._buckets.pop(next(iter(self._buckets)))
                bucket = self._buckets[caller] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.per_second)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.per_second


class Guard:
    """Checks a write's API key and rate limit.

    Args:
      api_keys: the accepted keys; empty means keyless.
      limiter: the per-caller rate limiter.
    """

    def __init__(self, api_keys: tuple[str, ...], limiter: RateLimiter) -> None:
        self._keys = tuple(key.encode("utf-8") for key in api_keys)
        self.limiter = limiter

    @property
    def keyless(self) -> bool:
        return not self._keys

    def check(self, authorization: str | None, client: str) -> str:
        """Authenticates and rate-limits one write.

        Args:
          authorization: the ``Authorization`` header, if any.
          client: the client's address (the rate-limit bucket when keyless).

        Returns:
          Who made the request: a key label, or ``client:<address>`` when keyless.

        Raises:
          ApiError: 401 without a valid bearer key; 429 (with ``Retry-After``) over the limit.
        """
        if self.keyless:
            caller = f"client:{client}"
        else:
            if authorization is None:
                raise ApiError(401, "authentication required: send 'Authorization: Bearer <API key>'",
                               headers={"WWW-Authenticate": "Bearer"})
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "authentication required: the Authorization header must be "
                                    "'Bearer <API key>'", headers={"WWW-Authenticate": "Bearer"})
            presented = token.strip().encode("utf-8")
            # Compare with every key (constant time each), so the timing says nothing of which.
            matches = [hmac.compare_digest(presented, key) for key in self._keys]
            if not any(matches):
                raise ApiError(401, "invalid API key", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
            caller = key_label(token.strip())
        wait = self.limiter.acquire(caller)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise ApiError(429, f"rate limit exceeded for {caller}: at most {self.limiter.per_second:g} "
                                f"writes per second (burst {self.limiter.burst}); retry after {retry_after} s",
                           headers={"Retry-After": str(retry_after)})
        return caller
