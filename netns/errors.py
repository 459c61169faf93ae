"""One error type with context chaining, and the printer for Netavark's `{"error": ...}` contract."""

from __future__ import annotations

import json
from collections.abc import Sequence


class BurrowError(Exception):
    """An error whose message is a chain of contexts joined by ': ', as Netavark prints them.

    `ctx.wrap(...)` adds the outer context, so the final text reads
    `setup bridge br0: add address 10.88.0.1/16: File exists`.
    """

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def wrap(self, context: str) -> BurrowError:
        err = type(self)(f"{context}: {self.message}", exit_code=self.exit_code)
        err.__cause__ = self
        return err

    def __str__(self) -> str:
        return self.message


class UsageError(BurrowError):
    """Bad command-line usage: text on stderr, exit code 2 (clap's contract)."""

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        super().__init__(message, exit_code=exit_code)


class MultiError(BurrowError):
    """Several independent failures (teardown gathers them all), rendered as Netavark does."""

    def __init__(self, errors: Sequence[BurrowError | str]) -> None:
        self.errors = [e if isinstance(e, BurrowError) else BurrowError(e) for e in errors]
        if len(self.errors) == 1:
            text = self.errors[0].message
        else:
            text = "netavark encountered multiple errors:" + "".join(
                f"\n\t- {e.message}" for e in self.errors
            )
        super().__init__(text)


def context(message: str, exc: BaseException) -> BurrowError:
    """Map any exception to a BurrowError under `message`, keeping the chain."""
    if isinstance(exc, BurrowError):
        return exc.wrap(message)
    if isinstance(exc, OSError) and exc.strerror:
        detail = f"IO error: {exc.strerror} (os error {exc.errno})"
    else:
        detail = str(exc) or type(exc).__name__
    err = BurrowError(f"{message}: {detail}")
    err.__cause__ = exc
    return err


def error_json(err: BaseException) -> str:
    """The single line Netavark prints on stdout for a failure."""
    return json.dumps({"error": str(err)}, separators=(",", ":"))
