"""`burrow podman enable --system` refuses an install other users cannot run (their Podman would
silently fall back to its own netavark), naming the path that blocks and the fix; the check runs
the helpers as `nobody` (root) and walks the mode bits. Real files in a private /tmp directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from netns.errors import BurrowError
from rootless import install_check, podman

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="environment: running helpers as another user needs root and setpriv")


@pytest.fixture
def install() -> Iterator[Path]:
    """A fake install `<top>/private/bin/burrow-{netavark,dns}`; `private` starts out 0700."""
    top = Path(tempfile.mkdtemp(prefix="bcst-install-", dir="/tmp"))
    top.chmod(0o755)
    private = top / "private"
    (private / "bin").mkdir(parents=True)
    private.chmod(0o700)
    for name in ("burrow-netavark", "burrow-dns"):
        ep = private / "bin" / name
        ep.write_text("#!/bin/sh\necho '{\"version\": \"0\"}'\n")
        ep.chmod(0o755)
    try:
        yield private
    finally:
        shutil.rmtree(top, ignore_errors=True)


def eps(private: Path) -> list[Path]:
    return [private / "bin" / "burrow-netavark", private / "bin" / "burrow-dns"]


@needs_root
def test_private_install_is_refused_naming_path_and_fix(install: Path) -> None:
    with pytest.raises(BurrowError) as e:
        install_check.require_runnable_by_others(eps(install))
    msg = str(e.value)
    assert f"{install} is mode 0700" in msg and f"chmod o+x {install}" in msg
    assert "fall back to its own netavark" in msg and "/opt/burrow" in msg
    install.chmod(0o755)
    install_check.require_runnable_by_others(eps(install))  # now every user can run it


def test_mode_bits_alone_without_root(install: Path) -> None:
    """Not root (a redirected --conf-dir): the mode walk is the check."""
    with pytest.raises(BurrowError, match="other users lack x on this directory"):
        install_check.require_runnable_by_others(eps(install), euid=1000)
    install.chmod(0o755)
    (install / "bin" / "burrow-dns").chmod(0o700)
    with pytest.raises(BurrowError, match="burrow-dns is mode 0700: other users lack rx"):
        install_check.require_runnable_by_others(eps(install), euid=1000)


@needs_root
def test_helpers_that_fail_as_another_user_are_refused(install: Path) -> None:
    """Mode bits can look right while the helper still cannot run for others (here it needs a
    file only root reads): running it as nobody is what catches that."""
    install.chmod(0o755)
    secret = install / "secret"
    secret.write_text("x")
    secret.chmod(0o600)
    (install / "bin" / "burrow-dns").write_text(f"#!/bin/sh\ncat {secret} >/dev/null\n")
    with pytest.raises(BurrowError, match=r"burrow-dns version` as another user: .*Permission denied"):
        install_check.require_runnable_by_others(eps(install))


@needs_root
def test_enable_system_checks_before_writing(tmp_path: Path, install: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    names = {"burrow-netavark": eps(install)[0], "burrow-dns": eps(install)[1],
             "burrow-rootlessport": install / "bin" / "burrow-rootlessport"}
    monkeypatch.setattr(podman, "entry_point", lambda name: names[name])
    s = podman.Scope("system", tmp_path / "conf.d", tmp_path / "helpers")
    with pytest.raises(BurrowError, match="other users cannot run this burrow install"):
        podman.plan_enable(s, {"HOME": str(tmp_path)})
    assert not s.dropin.exists() and not s.helper_dir.exists()
    # --user is the installer's own Podman: no such check.
    podman.plan_enable(podman.Scope("user", tmp_path / "u.d", tmp_path / "uh"),
                       {"HOME": str(tmp_path)})
