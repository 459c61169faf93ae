"""`--filter until=...`: Podman's (Docker's timetype) point-in-time syntax, as epoch seconds.

Podman accepts a Go duration counted back from now ("10m", "1h30m", "1.5h") or a point in
time: Unix seconds ("1700000000", "1700000000.5"), RFC 3339 ("2026-11-29T06:00:00Z",
"...+01:00") or its shorter forms without a zone ("2026-11-29T06:00", "2026-11-29"), which
mean local time. Pure: `now` comes from the caller.
"""

from __future__ import annotations

import datetime
import re

from netns.errors import BurrowError

# Go's time.ParseDuration units, in seconds.
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION = re.compile(rf"(?:{_PART.pattern})+")
_UNIX = re.compile(r"\d{1,12}(?:\.\d{1,9})?")
_MAX_TEXT = 64


def until(value: str, now: float) -> float:
    """The epoch seconds `value` names; BurrowError naming the accepted forms otherwise."""
    if len(value) > _MAX_TEXT:
        raise _bad(value[:_MAX_TEXT] + "...")
    if _DURATION.fullmatch(value):
        return now - sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))
    if _UNIX.fullmatch(value):
        return float(value)
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise _bad(value) from None
    # No zone: local time, as Docker's and Podman's parser read it.
    return when.timestamp()


def created_before(created: str, limit: float) -> bool:
    """Whether an RFC 3339 `created` (as burrow writes it) lies before `limit`; a record
    without a readable time is never pruned by age."""
    try:
        return datetime.datetime.fromisoformat(created).timestamp() < limit
    except (TypeError, ValueError):
        return False


def _bad(value: str) -> BurrowError:
    return BurrowError(
        f"invalid --filter until={value!r}: give a duration back from now (10m, 1h30m, 24h), "
        "Unix seconds (1700000000) or a time (2026-11-29, 2026-11-29T06:00:00Z)")
