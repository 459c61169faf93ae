"""The BURROW_* environment the burrow CLI reads, read once into one typed object.

`rootless.cli` (the composition root) builds it with `Settings.from_env` and passes it down;
nothing else in `rootless/` reads these variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from netns.errors import BurrowError

STATE_DIR = "BURROW_STATE_DIR"
DATA_DIR = "BURROW_DATA_DIR"
CONNECTOR = "BURROW_CONNECTOR"
DEBUG = "BURROW_DEBUG"
ENGINE_LOG = "BURROW_ENGINE_LOG"
PODMAN_CONF_DIR = "BURROW_PODMAN_CONF_DIR"
PODMAN_HELPER_DIR = "BURROW_PODMAN_HELPER_DIR"


@dataclass(frozen=True)
class Settings:
    state_dir: Path | None = None     # overrides the per-user (or rootful) state directory
    connector: str | None = None      # slirp4netns or pasta; None: whichever is installed
    debug: bool = False               # tracebacks for internal errors
    engine_log: str = ""              # RUST_LOG for the engine (Netavark's variable)
    podman_conf_dir: str | None = None
    podman_helper_dir: str | None = None
    xdg_runtime_dir: str | None = None
    data_dir: Path | None = None      # where networks live (default: see rootless.paths)
    xdg_data_home: str | None = None
    home: str | None = None

    def environ(self) -> dict[str, str]:
        """The XDG variables as read, for rootless.paths (which reads no environment itself)."""
        pairs = {"XDG_RUNTIME_DIR": self.xdg_runtime_dir, "XDG_DATA_HOME": self.xdg_data_home,
                 "HOME": self.home}
        return {k: v for k, v in pairs.items() if v}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        state, data = env.get(STATE_DIR, ""), env.get(DATA_DIR, "")
        for var, value in ((STATE_DIR, state), (DATA_DIR, data)):
            if value and not os.path.isabs(value):
                # A relative state dir would follow the working directory: two commands run
                # from two directories would see two worlds.
                raise BurrowError(f"{var}={value!r} is relative; give an absolute path")
        return cls(
            state_dir=Path(state) if state else None,
            connector=env.get(CONNECTOR) or None,
            debug=bool(env.get(DEBUG)),
            engine_log=env.get(ENGINE_LOG, ""),
            podman_conf_dir=env.get(PODMAN_CONF_DIR) or None,
            podman_helper_dir=env.get(PODMAN_HELPER_DIR) or None,
            xdg_runtime_dir=env.get("XDG_RUNTIME_DIR") or None,
            data_dir=Path(data) if data else None,
            xdg_data_home=env.get("XDG_DATA_HOME") or None,
            home=env.get("HOME") or None,
        )
