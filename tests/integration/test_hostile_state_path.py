"""A state directory whose path holds a quote (`BURROW_STATE_DIR`, `XDG_RUNTIME_DIR`).

Before: the sandbox netns path went into `sh -c` scripts between single quotes, so
`/srv/it's; echo X >&2; '/...` ran `echo X` (as root, rootful) and sandbox creation failed.
Now the path reaches the shell as "$1" (or quoted), never as script text.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_rootful_cli import Rootful
from tests.nsutil import Netns
from tests.rootless_user import RUNTIME_PARENT, RUNTIME_PREFIX, Session

QUOTED = "it's; echo AD3-INJECTED >&2; '"


def create_and_remove(tool: Any, close: Callable[[], Any], top: Path | str) -> None:
    """`sandbox create` then `rm` under the quoted path: no injected command ran, both
    succeeded, and closing the tool (`burrow down`) left nothing running."""
    try:
        res = tool.burrow("sandbox", "create", "web", timeout=60)
        assert "AD3-INJECTED" not in res.err, res.err
        assert res.rc == 0, res.err
        assert tool.burrow("sandbox", "rm", "web").rc == 0
    finally:
        left = close()
        shutil.rmtree(top, ignore_errors=True)
    assert not left, left


@pytest.mark.root
def test_rootful_state_dir_with_a_quote(netns_factory: Callable[[], Netns]) -> None:
    rf = Rootful(netns_factory())
    top = rf.state
    rf.state = top / QUOTED
    rf.state.mkdir()
    create_and_remove(rf, rf.close, top)


@pytest.mark.rootless
def test_rootless_runtime_dir_with_a_quote(rootless_user: Any) -> None:
    top = tempfile.mkdtemp(prefix=RUNTIME_PREFIX, dir=RUNTIME_PARENT)
    runtime = Path(top) / QUOTED
    runtime.mkdir()
    for d in (top, runtime):
        os.chown(d, rootless_user.uid, rootless_user.gid)
        os.chmod(d, 0o700)
    s = Session(rootless_user, str(runtime))
    create_and_remove(s, s.close, top)
