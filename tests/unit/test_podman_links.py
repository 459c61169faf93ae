"""`burrow podman enable/disable/status`: --user links rootlessport next to netavark and
aardvark-dns (rootless Podman finds it the same way), --system does not (rootful Podman never
runs it, and a system link would reach every rootless user), and disable restores Podman's own.
Real files in a temporary directory; Podman's search is rootless.podman.find_helper."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rootless import podman


def scope(tmp: Path, name: str) -> podman.Scope:
    return podman.Scope(name, tmp / "conf.d", tmp / "helpers")


def env(tmp: Path) -> dict[str, str]:
    return {"HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp / "cfg"), "XDG_DATA_HOME": str(tmp / "data")}


def test_user_enable_links_rootlessport_and_disable_restores(tmp_path: Path) -> None:
    s = scope(tmp_path, "user")
    change = podman.plan_enable(s, env(tmp_path))
    assert any("rootlessport" in line and "burrow-rootlessport" in line for line in change.lines())
    podman.apply(change)
    link = s.helper_dir / "rootlessport"
    assert os.readlink(link).endswith("/burrow-rootlessport")
    assert podman.is_burrow(link)
    # Podman's lookup: the drop-in's first directory is ours, Podman's own dirs follow it.
    dirs = podman.merge([s.dropin]).helper_binaries_dir
    assert dirs[0] == str(s.helper_dir) and "/usr/lib/podman" in dirs
    assert podman.find_helper("rootlessport", dirs) == link
    assert podman.plan_enable(s, env(tmp_path)).empty  # idempotent
    info = podman.collect_status(s, {**env(tmp_path), "CONTAINERS_CONF": str(s.dropin)})
    assert info["rootlessport"] == str(link) and info["rootlessport_is_burrow"]
    assert "rootlessport:" in podman.render_status(info)

    podman.apply(podman.plan_disable(s))
    assert not link.exists() and not s.dropin.exists() and not s.helper_dir.exists()
    found = podman.find_helper("rootlessport", podman.PODMAN_DEFAULT_HELPER_DIRS)
    assert found is None or not podman.is_burrow(found)  # Podman's own again


def test_enable_adds_rootlessport_to_an_older_user_enable(tmp_path: Path) -> None:
    """A user who enabled with a burrow that linked only netavark/aardvark-dns gets the link on
    the next `enable` (it is not reported as `already enabled`)."""
    s = scope(tmp_path, "user")
    podman.apply(podman.plan_enable(s, env(tmp_path)))
    (s.helper_dir / "rootlessport").unlink()
    change = podman.plan_enable(s, env(tmp_path))
    assert not change.empty
    podman.apply(change)
    assert podman.is_burrow(s.helper_dir / "rootlessport")


def test_system_scope_does_not_link_rootlessport(tmp_path: Path) -> None:
    s = scope(tmp_path, "system")
    podman.apply(podman.plan_enable(s, env(tmp_path)))
    assert (s.helper_dir / "netavark").is_symlink()
    assert not (s.helper_dir / "rootlessport").exists()
    podman.apply(podman.plan_disable(s))
    assert not s.helper_dir.exists()


def test_enable_without_the_rootlessport_entry_point_links_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .venv built before burrow-rootlessport existed: enable still links netavark and
    aardvark-dns and says what to do, instead of failing."""
    real = podman.entry_point

    def entry_point(name: str) -> Path:
        if name == "burrow-rootlessport":
            raise podman.BurrowError("cannot find burrow's `burrow-rootlessport` entry point")
        return real(name)

    monkeypatch.setattr(podman, "entry_point", entry_point)
    s = scope(tmp_path, "user")
    change = podman.plan_enable(s, env(tmp_path))
    assert any("burrow-rootlessport is not installed" in line for line in change.lines())
    podman.apply(change)
    assert (s.helper_dir / "netavark").is_symlink() and not (s.helper_dir / "rootlessport").exists()
