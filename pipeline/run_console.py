"""A run a person can read: one line per component, with its time; the full logs in a file.

On a terminal a component's "running ..." line is rewritten in place by its "done" line. Where
the output is not a terminal (a pipe, a CI log) only the "done" line is printed, preceded by a
"running ..." line when the component is still running after ``STILL_RUNNING_AFTER_S``, so a long
step still shows progress and a run of 17 components stays within a screen.

:class:`RunConsole` redirects the process's own stdout and stderr file descriptors (so TF's C++
logs, absl, Beam, Python warnings and any worker process it starts) to ``<log_dir>/pipeline.log``
and writes its progress lines to the terminal it found. With ``verbose`` nothing is redirected:
the logs show live, and still go to the file through absl.

The component lines come from the orchestrator's own log records ("Component %s is running." /
"is finished." in ``tfx.orchestration.local.local_dag_runner``, "A cached execution %d is used."
in its launcher), read by a logging handler; nothing is parsed from text.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from types import TracebackType
from typing import IO

LOG_FILE = "pipeline.log"
_RUNNING = "Component %s is running."
_FINISHED = "Component %s is finished."
_CACHED = "A cached execution %d is used."
STILL_RUNNING_AFTER_S = 20.0
_REPORTED = "_reported_by_run_console"


def reported_by_console(error: BaseException) -> bool:
    """Whether a :class:`RunConsole` already printed ``error`` (component, cause, log path)."""
    return getattr(error, _REPORTED, False)


class _ComponentProgress(logging.Handler):
    """Turns the orchestrator's component records into progress lines on ``console``."""

    def __init__(self, console: RunConsole, still_running_after_s: float = STILL_RUNNING_AFTER_S) -> None:
        super().__init__(logging.INFO)
        self._console = console
        self._still_running_after_s = still_running_after_s
        self.running: str | None = None
        self._started = 0.0
        self._cached = False
        self._timer: threading.Timer | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == _RUNNING:
            self.running, self._started, self._cached = str(record.args[0]), time.monotonic(), False
            line = f"  {self.running:<30} running ..."
            if self._console.interactive:
                self._console.say(line, end="")
            else:
                self._timer = threading.Timer(self._still_running_after_s, self._console.say, args=(line,))
                self._timer.daemon = True
                self._timer.start()
        elif record.msg == _CACHED:
            self._cached = True
        elif record.msg == _FINISHED and self.running is not None:
            self.cancel_timer()
            seconds = time.monotonic() - self._started
            line = f"  {self.running:<30} {'cached' if self._cached else 'done':<8} {seconds:6.1f} s"
            self._console.say(f"\r\033[K{line}" if self._console.interactive else line)
            self.running = None

    def cancel_timer(self) -> None:
        """Drops a pending "still running" line (the component ended, or the run did)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class RunConsole:
    """Context manager: progress on the terminal, everything else to ``<log_dir>/pipeline.log``.

    Args:
      log_dir: folder for the full log (created).
      verbose: show the logs live instead of redirecting them.
      interactive: rewrite a component's line in place; default: stdout is a terminal and not
        ``verbose``.
      still_running_after_s: off a terminal, announce a component still running after this long.

    On an exception inside the block it prints the failing component (when one was running), the
    cause and the log's path, and lets the exception propagate.
    """

    def __init__(self, log_dir: str, verbose: bool = False, interactive: bool | None = None,
                 still_running_after_s: float = STILL_RUNNING_AFTER_S) -> None:
        os.makedirs(log_dir, exist_ok=True)
        self.log_path = os.path.join(log_dir, LOG_FILE)
        self.verbose = verbose
        self._terminal: IO[str] = sys.stdout
        # Rewriting a line in place needs a terminal, and no live logs interleaving with it.
        self.interactive = (sys.stdout.isatty() and not verbose) if interactive is None else interactive
        self._lock = threading.Lock()
        self._saved_fds: tuple[int, int] | None = None
        self._log_file: IO[bytes] | None = None
        self._progress = _ComponentProgress(self, still_running_after_s)
        self._file_handler: logging.Handler | None = None

    def say(self, line: str, end: str = "\n") -> None:
        """Writes ``line`` to the terminal (and, when redirected, to the log too); thread-safe."""
        with self._lock:
            print(line, file=self._terminal, end=end, flush=True)
            if not self.verbose and self._log_file is not None:
                print(f"[progress] {line.removeprefix(chr(13) + chr(27) + '[K')}", file=sys.stderr, flush=True)

    def __enter__(self) -> RunConsole:
        sys.stdout.flush()
        sys.stderr.flush()
        self._log_file = open(self.log_path, "ab", buffering=0)
        if self.verbose:
            self._file_handler = logging.StreamHandler(open(self.log_path, "a", encoding="utf-8"))
            logging.getLogger().addHandler(self._file_handler)
        else:
            self._saved_fds = (os.dup(1), os.dup(2))
            self._terminal = os.fdopen(os.dup(self._saved_fds[0]), "w", buffering=1)
            os.dup2(self._log_file.fileno(), 1)
            os.dup2(self._log_file.fileno(), 2)
        logging.getLogger("absl").addHandler(self._progress)
        self.say(f"full logs: {self.log_path}{' (also shown live)' if self.verbose else ''}")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        logging.getLogger("absl").removeHandler(self._progress)
        self._progress.cancel_timer()
        if self._progress.running is not None and self.interactive:
            self.say("")  # ends the pending "running ..." line
        if error is not None and not isinstance(error, KeyboardInterrupt):
            print("".join(traceback.format_exception(kind, error, trace)), file=sys.stderr, flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        if self._saved_fds is not None:
            os.dup2(self._saved_fds[0], 1)
            os.dup2(self._saved_fds[1], 2)
            for fd in self._saved_fds:
                os.close(fd)
            self._terminal.close()
            self._terminal = sys.stdout
        if self._file_handler is not None:
            logging.getLogger().removeHandler(self._file_handler)
            self._file_handler.close()
        if self._log_file is not None:
            self._log_file.close()
        if error is not None:
            setattr(error, _REPORTED, True)
            where = f"component {self._progress.running} failed" if self._progress.running else "the run failed"
            cause = str(error).strip().splitlines()
            print(f"FAILED: {where}: {type(error).__name__}: {cause[0] if cause else ''}", file=sys.stderr)
            for line in cause[1:20]:
                print(f"  {line}", file=sys.stderr)
            print(f"full log: {self.log_path}", file=sys.stderr, flush=True)
