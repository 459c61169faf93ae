"""`sudo scripts/demo` in a user's own clone: the rootless part runs as the invoking user
(SUDO_USER), and afterwards nothing in the clone belongs to root, so the user's own
`scripts/install` still works. A fresh clone in a new home of the harness user, as in
test_readme_quickstart; root runs the script with SUDO_USER set, as sudo does."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_readme_quickstart import INSTALL_TIMEOUT, USER_PATH, fresh_home, run_as_user

pytestmark = [pytest.mark.e2e, pytest.mark.rootless]
__all__ = ["fresh_home"]  # the fixture, imported for this module's tests


def _root_owned(top: Path) -> list[str]:
    res = subprocess.run(["find", str(top), "-xdev", "-uid", "0", "-print"], capture_output=True,
                         text=True, check=False)
    return res.stdout.split()


@pytest.mark.timeout(INSTALL_TIMEOUT + 240)
def test_sudo_demo_runs_as_you_and_leaves_nothing_of_roots(rl: Any, fresh_home: Path) -> None:
    clone = fresh_home / "burrow"
    user = rl.user
    env = {**os.environ, "SUDO_USER": user.name, "SUDO_UID": str(user.uid),
           "SUDO_GID": str(user.gid)}
    res = subprocess.run(["scripts/demo"], cwd=clone, env=env, capture_output=True, text=True,
                         timeout=INSTALL_TIMEOUT + 180, check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert f"run as you ({user.name})" in out, out
    assert "demo OK" in res.stdout, out
    assert _root_owned(clone) == []
    assert (clone / ".venv").stat().st_uid == user.uid
    # The user's own install and demo still work in that clone, without root.
    run_as_user(rl, fresh_home, "scripts/install && .venv/bin/burrow --help >/dev/null",
                USER_PATH.format(home=fresh_home), INSTALL_TIMEOUT)
    assert _root_owned(clone) == []
