"""The user's runtime directory: the one rule every part of burrow follows to find it.

As Podman finds it (containers/storage GetRuntimeDir):
- XDG_RUNTIME_DIR set: it must be an absolute path to an existing directory, else an error
  naming the fix. Never a silent fallback: a relative value means a different directory from
  each working directory, and a fallback gave one user two sets of networks (and two warm
  engines) depending on which part of burrow looked.
- unset: /run/user/<uid> when it is a directory of the user's that only they can write;
- else none: burrow keeps its state in /tmp/burrow-<uid>, which whoever creates it makes 0700
  and refuses when it is not the user's or others may write it (rootless.paths.StatePaths.
  ensure, netns.server.ensure_private_dir), so another user cannot plant a socket there.

Used by rootless.paths (the rootless state directory) and by the thin client netns.client (the
warm engine's socket without --config), so it imports nothing but `os` and `stat`.
"""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

RUN_USER = "/run/user"
TMP_PREFIX = "/tmp/burrow-"  # + uid: the state directory when there is no runtime directory


class RuntimeDirError(ValueError):
    """XDG_RUNTIME_DIR is set to something unusable; the message names the fix."""


def user_runtime_dir(env: Mapping[str, str], uid: int, run_user: str = RUN_USER) -> str | None:
    """The user's runtime directory (see the module doc), or None when there is none."""
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if xdg:
        if not os.path.isabs(xdg) or not os.path.isdir(xdg):
            fix = ("is not an absolute path; set it to one (a private directory of yours)"
                   if not os.path.isabs(xdg) else
                   f"does not exist; create it (`mkdir -m 700 {xdg}`)")
            raise RuntimeDirError(
                f"XDG_RUNTIME_DIR={xdg} {fix}, or unset XDG_RUNTIME_DIR (burrow then uses "
                f"{run_user}/{uid} if it is yours, else {TMP_PREFIX}{uid}), or log in again "
                "so that systemd-logind sets it")
        return xdg
    mine = f"{run_user}/{uid}"
    try:
        st = os.lstat(mine)
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not stat.S_IMODE(st.st_mode) & 0o022:
        return mine
    return None


def burrow_dir(env: Mapping[str, str], uid: int, run_user: str = RUN_USER) -> str:
    """Where burrow keeps this user's runtime state: `<runtime dir>/burrow`, else
    /tmp/burrow-<uid>. RuntimeDirError for an unusable XDG_RUNTIME_DIR."""
    run = user_runtime_dir(env, uid, run_user)
    return os.path.join(run, "burrow") if run is not None else f"{TMP_PREFIX}{uid}"
