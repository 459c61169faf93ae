"""`json.loads` for short-lived helpers whose start-up is on someone's critical path.

`_json`'s C scanner decodes a document exactly as json.loads does, without importing `json`
(and with it `re`, `enum` and more: several ms of a helper's start-up). Used where a program
reads one JSON document at start-up (burrow-cni's thin client, burrow-rootlessport's phase 1).
"""

from __future__ import annotations

_WHITESPACE = " \t\n\r"  # JSON's whitespace (str.strip() would also take others)


class _ScanContext:
    """What `_json.make_scanner` reads from `json.JSONDecoder`."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity


class NotJson(ValueError):
    """The text is not one JSON document; where json.loads would raise."""


def loads(data: bytes | str) -> object:
    """The document (UTF-8 if bytes), or NotJson. The message of a failure is json.loads's,
    from `json` itself: that import is paid only on the error path."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        start = len(text) - len(text.lstrip(_WHITESPACE))
        import _json

        obj, end = _json.make_scanner(_ScanContext())(text, start)  # type: ignore[arg-type]
        if not text[end:].strip(_WHITESPACE):
            return obj
    except (Exception, StopIteration, RecursionError):
        pass
    import json

    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise NotJson(str(e)) from None
