"""`burrow podman status` run by a user who cannot reach the helpers a system-wide config points
at (an install in a private directory): a diagnosis naming the path and the fix, exit 0, not a
PermissionError. Run as the unprivileged test user."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.rootless


@pytest.fixture
def private_helpers() -> Iterator[tuple[Path, Path]]:
    """A containers.conf everyone reads, whose first helper dir is root's private directory."""
    top = Path(tempfile.mkdtemp(prefix="bcst-podman-", dir="/tmp"))
    top.chmod(0o755)
    private = top / "private"
    (private / "helpers").mkdir(parents=True)
    for name in ("netavark", "aardvark-dns"):
        (private / "helpers" / name).symlink_to("/bin/true")
    private.chmod(0o700)
    conf = top / "containers.conf"
    conf.write_text(f'[engine]\nhelper_binaries_dir = ["{private}/helpers", "/usr/lib/podman"]\n')
    conf.chmod(0o644)
    try:
        yield conf, private / "helpers"
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_status_as_a_user_who_cannot_reach_the_helpers(rl: Any,
                                                       private_helpers: tuple[Path, Path]) -> None:
    conf, helpers = private_helpers
    res = rl.run(["env", f"CONTAINERS_CONF={conf}", "burrow", "podman", "status"])
    assert res.rc == 0, res
    assert "PermissionError" not in res.err and "Traceback" not in res.err
    assert f"cannot run {helpers}/ (permission denied)" in res.out, res.out
    assert "permission denied" in res.out and "enable --system" in res.out
    assert "Podman uses burrow: no" in res.out
    js = rl.run(["env", f"CONTAINERS_CONF={conf}", "burrow", "podman", "status", "--format",
                 "json"], check=True)
    info = json.loads(js.out)
    assert info["unreachable"] == [f"{helpers}/"]
    # Podman skips what it cannot stat: the next directory's netavark, if any, is what it runs.
    assert info["netavark"] in (None, "/usr/lib/podman/netavark")
