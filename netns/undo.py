"""An undo stack that collects errors: every step is attempted, in reverse, and none is lost.

Each side effect pushes its inverse as soon as it has happened, so a failure at any point
unwinds exactly the applied prefix. `unwind()` never raises: it returns the failures, each with
the context of the step it was undoing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from netns.errors import BurrowError, context


@dataclass
class UndoStack:
    _steps: list[tuple[str, Callable[[], object]]] = field(default_factory=list)

    def push(self, what: str, undo: Callable[[], object]) -> None:
        """`what` names the step being undone, e.g. "rollback firewall"."""
        self._steps.append((what, undo))

    def __len__(self) -> int:
        return len(self._steps)

    def unwind(self) -> list[BurrowError]:
        errors: list[BurrowError] = []
        while self._steps:
            what, undo = self._steps.pop()
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - collect every failure, attempt every step
                errors.append(context(what, exc))
        return errors
