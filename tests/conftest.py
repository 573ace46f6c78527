"""Shared test set-up (Keras 2 for TFRS is selected by the venv's .pth file, before any import).

:func:`require` is how a test says it needs something this machine may lack (a service binary, a
browser, a dataset). Locally a missing one skips the test with the reason. Under ``CI=true`` it
fails the test instead, naming what is missing and how to install it, so that CI cannot go green
by skipping: ``.ci/run`` installs all of them (``scripts/install_services.sh``).
"""

from __future__ import annotations

import os

import pytest

CI_ENV = "CI"


def in_ci() -> bool:
    """Whether the tests run in CI (``CI=true``, as CI systems set it)."""
    return os.environ.get(CI_ENV, "").strip().lower() in ("1", "true", "yes")


def require(available: bool, what: str, how: str) -> None:
    """Skips (locally) or fails (under ``CI=true``) the calling test when ``what`` is missing.

    Args:
      available: whether the thing is there.
      what: what is missing, e.g. "the redis-server binary".
      how: how to get it, e.g. "apt-get install redis-server".
    """
    if available:
        return
    message = f"{what} is missing ({how})"
    if in_ci():
        pytest.fail(f"CI=true: {message}; in CI a missing dependency fails instead of skipping", pytrace=False)
    pytest.skip(message)


def requirement_mark(available: bool, what: str, how: str) -> pytest.MarkDecorator:
    """A mark for tests that need ``what``: :func:`require` runs before each of them."""
    return pytest.mark.requires(available=available, what=what, how=how)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires(available, what, how): the test needs something this machine "
                                       "may lack; skipped locally, a failure under CI=true")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers(name="requires"):
        require(mark.kwargs["available"], mark.kwargs["what"], mark.kwargs["how"])
