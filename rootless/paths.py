"""The per-user state layout, and the one lock that serialises changes to it.

Everything lives under one private directory: `$XDG_RUNTIME_DIR/burrow/`, or `/tmp/burrow-<uid>/`
when there is no runtime directory (no logind on many CI machines). The directory must be owned
by the user and mode 0700: other users must never be able to plant a socket or a pid file that
burrow would then trust.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netns import locks
from netns.errors import BurrowError


@dataclass(frozen=True)
class StatePaths:
    root: Path

    @classmethod
    def for_user(cls, env: Mapping[str, str] | None = None) -> StatePaths:
        env = os.environ if env is None else env
        runtime = env.get("XDG_RUNTIME_DIR", "")
        if runtime and os.path.isdir(runtime):
            return cls(Path(runtime) / "burrow")
        return cls(Path(f"/tmp/burrow-{os.getuid()}"))

    # World (namespace) state: gone when the holder goes.
    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def holder(self) -> Path:
        return self.root / "holder.json"

    @property
    def holder_pending(self) -> Path:
        """The unshare(1) of a holder being made, until holder.json names the holder."""
        return self.root / "holder.pending.json"

    @property
    def connector(self) -> Path:
        return self.root / "connector.json"

    @property
    def netns_dir(self) -> Path:
        """Sandbox netns files; a tmpfs inside the holder's mount ns, empty from outside."""
        return self.root / "netns"

    @property
    def slirp_socket(self) -> Path:
        return self.root / "slirp4netns.sock"

    @property
    def pasta_pid(self) -> Path:
        return self.root / "pasta.pid"

    @property
    def forwarder(self) -> Path:
        return self.root / "forwarder.json"

    @property
    def forwarder_socket(self) -> Path:
        return self.root / "forwarder.sock"

    @property
    def forwarder_lock(self) -> Path:
        return self.root / "forwarder.lock"

    @property
    def xtables_lock(self) -> Path:
        """iptables-legacy's lock: its default lives in root-owned /run."""
        return self.root / "xtables.lock"

    @property
    def holder_log(self) -> Path:
        return self.log_dir / "holder.log"

    @property
    def forwarder_log(self) -> Path:
        return self.log_dir / "forwarder.log"

    @property
    def netavark_config(self) -> Path:
        """`--config` for the engine: aardvark/burrow-dns files, the engine's socket."""
        return self.root / "netavark"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    # Objects the user made: networks and sandboxes.
    @property
    def networks_dir(self) -> Path:
        return self.root / "networks"

    @property
    def sandboxes_dir(self) -> Path:
        return self.root / "sandboxes"

    @property
    def ipam_lock(self) -> Path:
        return self.root / "ipam.lock"

    def ensure(self) -> StatePaths:
        """Create the tree (0700) and refuse a root that someone else owns or that is a symlink."""
        try:
            self.root.mkdir(mode=0o700, parents=False, exist_ok=True)
        except FileNotFoundError as e:
            raise BurrowError(
                f"state directory {self.root}: parent does not exist; set XDG_RUNTIME_DIR to a "
                "directory you own"
            ) from e
        st = os.lstat(self.root)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise BurrowError(
                f"state directory {self.root} is not a directory owned by uid {os.getuid()}; "
                "remove it or set XDG_RUNTIME_DIR to a private directory"
            )
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(self.root, 0o700)
        for d in (self.netns_dir, self.log_dir, self.networks_dir, self.sandboxes_dir,
                  self.netavark_config):
            d.mkdir(mode=0o700, exist_ok=True)
        return self


@contextmanager
def locked(path: Path, *, timeout: float = 60.0, what: str = "burrow state") -> Iterator[None]:
    """The user's state locks wait at most `timeout` and then name the lock file to remove."""
    with locks.locked(path, timeout=timeout, what=what):
        yield


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Atomic replace, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (ValueError, OSError):
        return None  # a torn or foreign file counts as absent; callers repair
    return data if isinstance(data, dict) else None


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
