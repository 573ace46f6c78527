"""A throwaway redis-server for tests: its own port, folder and persistence settings."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from pathlib import Path

import portpicker
import redis

from tests.service.conftest import redis_binary


@dataclasses.dataclass
class RedisServer:
    """A real redis-server process (the tests' own), with its data folder."""

    folder: Path
    args: tuple[str, ...]
    port: int = dataclasses.field(default_factory=portpicker.pick_unused_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Starts it (again, from its AOF when it has one) and waits until it answers PING."""
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 - the server writes it while it runs
        self.process = subprocess.Popen([redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--dir", str(self.folder), "--save", "", *self.args],
                                        stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start:\n{(self.folder / 'redis.log').read_text()}")
                time.sleep(0.05)
        client.close()
        return self

    def kill(self) -> None:
        """SIGKILL: what is not in the AOF is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


DURABLE = ("--appendonly", "yes", "--appendfsync", "always")
