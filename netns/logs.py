"""One logging story: stdlib `logging`, a logger per package ("netns", "rootless"), configured
once per process by `configure()`.

Daemons (burrow-dns, the warm engine, the forwarder) log with timestamps to a file or stderr.
The Netavark front door must send one request's log lines to that request's stderr only, and
the warm engine serves many requests: `request_scope()` routes records to the current
request's stream through a context variable instead of reconfiguring handlers per request.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

PACKAGES = ("netns", "rootless")
TRACE = 5
# RUST_LOG / --log-level words, as netavark and aardvark take them.
LEVELS = {"error": logging.ERROR, "warn": logging.WARNING, "warning": logging.WARNING,
          "info": logging.INFO, "debug": logging.DEBUG, "trace": TRACE}
DAEMON_FORMAT = "%(asctime)s %(process_title)s[%(process)d] %(levelname)s %(name)s: %(message)s"
REQUEST_FORMAT = "[%(levelname)-5s %(name)s] %(message)s"

_scope: ContextVar[tuple[TextIO, int] | None] = ContextVar("burrow_log_scope", default=None)
_configured = False


def parse_level(text: str | None) -> int | None:
    """`RUST_LOG` may be `netavark=warn` or a comma list: the last level named wins."""
    if not text:
        return None
    word = text.split(",")[-1].split("=")[-1].strip().lower()
    return LEVELS.get(word)


class _Title(logging.Filter):
    def __init__(self, title: str) -> None:
        super().__init__()
        self.title = title

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_title = self.title
        return True


class _ScopeHandler(logging.Handler):
    """Writes a record to the stream of the request being served, if it asked for that level."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter(REQUEST_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        scope = _scope.get()
        if scope is None or record.levelno < scope[1]:
            return
        try:
            scope[0].write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - a log line must never fail the request it describes
            pass


def configure(
    title: str, *, level: int | None = logging.INFO, stream: TextIO | None = None,
    path: str | None = None,
) -> None:  # fmt: skip
    """Configure the package loggers once for this process (later calls change only the level).

    Daemon lines go to `path` (appended) or `stream` (default stderr); `level` None keeps the
    packages quiet except for request scopes.
    """
    global _configured
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.propagate = False
        logger.setLevel(min(level or logging.CRITICAL + 1, TRACE))
        if _configured:
            continue
        logger.handlers.clear()
        logger.addHandler(_ScopeHandler())
        if level is not None:
            out: logging.Handler = (
                logging.FileHandler(path, encoding="utf-8") if path
                else logging.StreamHandler(stream or sys.stderr)
            )
            out.setLevel(level)
            out.addFilter(_Title(title))
            out.setFormatter(logging.Formatter(DAEMON_FORMAT, "%Y-%m-%dT%H:%M:%S"))
            logger.addHandler(out)
    _configured = True


def reset() -> None:
    """Forget the configuration: for a process forked from a configured one (the warm engine
    forks burrow-dns) that becomes another daemon with its own log. Handlers are dropped, not
    closed: their files belong to the parent."""
    global _configured
    for name in PACKAGES:
        logging.getLogger(name).handlers.clear()
    _configured = False


@contextmanager
def request_scope(stream: TextIO, level: int | None) -> Iterator[None]:
    """Send this request's records at `level` or above to `stream` (None: none at all)."""
    if not _configured:
        configure(os.path.basename(sys.argv[0]) or "burrow", level=None)
    token = _scope.set((stream, level) if level is not None else None)
    try:
        yield
    finally:
        _scope.reset(token)
