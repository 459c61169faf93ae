"""The state layout (where each file lives), and the one lock that serialises changes to it.

Two places, as Podman has them:
- the *runtime* directory (`root`): the namespace holder, connector, sockets, pid files, logs,
  sandbox records. It dies with a reboot, as the namespaces do. Rootless that is
  `$XDG_RUNTIME_DIR/burrow/`, found by the one rule netns.rundir has for every part of burrow
  (the warm engine's client too): unset, what Podman does (`/run/user/<uid>` if it is the
  user's and private, else `/tmp/burrow-<uid>/`); relative or missing, an error naming the fix,
  never a silent fallback (that gave one user two sets of networks). Rootful: `/run/burrow/`.
- the *data* directory (`data`): networks, the user's configuration, which survive a reboot.
  Rootless `$XDG_DATA_HOME/burrow/` (default `~/.local/share/burrow/`), rootful `/etc/burrow/`
  (where Podman keeps its own networks: `/etc/containers/networks`).
`BURROW_STATE_DIR` puts both in that one directory (a self-contained burrow, what tests use)
unless `BURROW_DATA_DIR` names the data directory too.

The runtime directory must be owned by the user and mode 0700: other users must never be able
to plant a socket or a pid file that burrow would then trust.
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

from netns import locks, rundir, statefiles
from netns.errors import BurrowError

ROOTFUL_STATE_DIR = Path("/run/burrow")
ROOTFUL_DATA_DIR = Path("/etc/burrow")


def data_home(env: Mapping[str, str]) -> Path:
    """$XDG_DATA_HOME (absolute only, as the XDG spec says), else ~/.local/share."""
    xdg = env.get("XDG_DATA_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg)
    home = env.get("HOME") or ""
    if not os.path.isabs(home):
        import pwd

        home = pwd.getpwuid(os.getuid()).pw_dir
    return Path(home) / ".local" / "share"


@dataclass(frozen=True)
class StatePaths:
    root: Path
    data: Path | None = None  # None: the networks live in `root` (BURROW_STATE_DIR, tests)

    @classmethod
    def for_user(cls, env: Mapping[str, str] | None = None) -> StatePaths:
        env = os.environ if env is None else env
        try:
            root = Path(rundir.burrow_dir(env, os.getuid()))
        except rundir.RuntimeDirError as e:
            raise BurrowError(str(e)) from None
        return cls(root, data_home(env) / "burrow")

    @classmethod
    def choose(cls, state_dir: Path | None, data_dir: Path | None, *, rootful: bool,
               env: Mapping[str, str]) -> StatePaths:
        """The one decision of where burrow keeps things (see the module docstring)."""
        if state_dir is not None:
            return cls(state_dir, data_dir)
        if rootful:
            return cls(ROOTFUL_STATE_DIR, data_dir or ROOTFUL_DATA_DIR)
        found = cls.for_user(env)
        return cls(found.root, data_dir or found.data)

    def legacy_networks_dirs(self) -> list[Path]:
        """Where networks lived before they moved to the data directory: the runtime directory."""
        return [] if self.data is None else [self.root / "networks"]

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

    def command_log(self, sandbox: str) -> Path:
        """Output of a command `burrow up -f` started in a sandbox (name already checked)."""
        return self.log_dir / f"sandbox-{sandbox}.log"

    # Objects the user made: networks (configuration, kept) and sandboxes (runtime).
    @property
    def networks_dir(self) -> Path:
        return (self.data or self.root) / "networks"

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
        for d in (self.netns_dir, self.log_dir, self.sandboxes_dir, self.netavark_config):
            d.mkdir(mode=0o700, exist_ok=True)
        self.ensure_data()
        return self

    def ensure_data(self) -> None:
        """The networks directory; a data directory of someone else's is refused."""
        if self.data is not None:
            try:
                self.data.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as e:
                raise BurrowError(f"data directory {self.data}: {e.strerror}; set XDG_DATA_HOME "
                                  "to a directory you own") from e
            st = os.stat(self.data)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                raise BurrowError(
                    f"data directory {self.data} is not a directory owned by uid {os.getuid()}; "
                    "remove it or set XDG_DATA_HOME to a directory of your own")
        self.networks_dir.mkdir(mode=0o700, exist_ok=True)


@contextmanager
def locked(path: Path, *, timeout: float = 60.0, what: str = "burrow state") -> Iterator[None]:
    """The user's state locks wait at most `timeout` and then name the lock file to remove."""
    with locks.locked(path, timeout=timeout, what=what):
        yield


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Atomic replace, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a crash's leftover; and never a planted symlink's target
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        # Never blocking on a FIFO, never through a symlink (netns/statefiles.py).
        data = json.loads(statefiles.read_bytes(path))
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
