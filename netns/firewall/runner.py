"""The one place the firewall package starts processes (injectable: renders test without root)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from netns.errors import BurrowError

TIMEOUT = 60.0


@dataclass(frozen=True)
class ExecResult:
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    def __call__(self, argv: Sequence[str], stdin: str) -> ExecResult: ...


def subprocess_runner(argv: Sequence[str], stdin: str) -> ExecResult:
    try:
        res = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )
    except FileNotFoundError as exc:
        raise BurrowError(f"exec {argv[0]}: not found ({exc.strerror})") from exc
    except subprocess.TimeoutExpired:
        raise BurrowError(f"exec {argv[0]}: no answer in {TIMEOUT:.0f} s") from None
    return ExecResult(res.returncode, res.stdout, res.stderr)


def error_text(res: ExecResult) -> str:
    """The most useful line(s) of a failed exec, on one line."""
    text = (res.stderr.strip() or res.stdout.strip() or f"exit code {res.returncode}")
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
