"""`burrow podman`: make real Podman use burrow as its network backend, and undo it.

Podman 4.x finds `netavark` and `aardvark-dns` by searching `helper_binaries_dir` (containers.conf,
[engine]) in order. `enable` therefore:

1. makes a burrow-owned *helper directory* holding symlinks, `netavark` ->
   `.venv/bin/burrow-netavark` and `aardvark-dns` -> `.venv/bin/burrow-dns`, and for `--user`
   also `rootlessport` -> `.venv/bin/burrow-rootlessport` (rootless Podman's port forwarder,
   found the same way; rootful Podman never runs it) (symlinks, not wrapper scripts: no extra
   exec or interpreter start on Podman's critical path);
2. writes one containers.conf drop-in, `99-burrow.conf`, whose `helper_binaries_dir` lists that
   directory first, followed by the directories Podman searched before (so `rootlessport`,
   `catatonit` etc. are still found), and which sets `network_backend = "netavark"` and, for a
   netavark older than 1.9, NETAVARK_FW=iptables in [engine] env (see "the firewall driver").

`disable` removes exactly those files. Both print what they change before they change it and
are idempotent. `status` reads the same chain of containers.conf files Podman 4.3 reads and says
which `netavark` / `aardvark-dns` Podman will run.

Scopes (Podman's own config locations):
- `--system` (root only): /etc/containers/containers.conf.d/, helper dir <venv>/libexec/burrow-podman
- `--user`: $XDG_CONFIG_HOME/containers/containers.conf.d/ (default ~/.config/...), helper dir
  $XDG_DATA_HOME/burrow/podman (default ~/.local/share/burrow/podman)
Both directories can be redirected (`--conf-dir`/`BURROW_PODMAN_CONF_DIR`, `--helper-dir`/
`BURROW_PODMAN_HELPER_DIR`), which is what the tests do.

A stopped container's network teardown is run by `podman container cleanup`, which conmon
starts with only a few of Podman's variables: HOME, not XDG_CONFIG_HOME (spec/podman.md §3),
so it reads ~/.config/containers whatever $XDG_CONFIG_HOME says. With a custom XDG_CONFIG_HOME
(and no CONTAINERS_CONF, which conmon passes on), `enable --user` therefore writes the same
drop-in under ~/.config/containers too: otherwise that teardown would run Podman's own
netavark against burrow's state and leave DNS records and firewall rules behind. `disable`
removes both, and `status` says when setup and cleanup would run different netavarks.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from netns.errors import BurrowError

DROPIN_NAME = "99-burrow.conf"
MARKER = "# Written by `burrow podman enable`."
HELPER_MARKER = ".burrow-podman-helpers"
# Podman 4.3's built-in helper_binaries_dir (containers/common v0.50, Linux).
PODMAN_DEFAULT_HELPER_DIRS = (
    "/usr/local/libexec/podman",
    "/usr/local/lib/podman",
    "/usr/libexec/podman",
    "/usr/lib/podman",
)
SYSTEM_CONF = Path("/usr/share/containers/containers.conf")
ETC_CONF = Path("/etc/containers/containers.conf")
ETC_DROPIN_DIR = Path("/etc/containers/containers.conf.d")
# The binaries Podman looks up in helper_binaries_dir, and burrow's entry point for each.
HELPERS = {"netavark": "burrow-netavark", "aardvark-dns": "burrow-dns"}
# Only rootless Podman runs rootlessport: linked for --user. A system-wide link would also
# reach every rootless user of the machine through /etc/containers, which --system must not.
USER_HELPERS = {**HELPERS, "rootlessport": "burrow-rootlessport"}
ALL_HELPERS = USER_HELPERS


# -- where things are -------------------------------------------------------------------------
def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or os.path.expanduser("~"))


def user_config_home(env: Mapping[str, str]) -> Path:
    xdg = env.get("XDG_CONFIG_HOME", "")
    return Path(xdg) if xdg.startswith("/") else _home(env) / ".config"


def user_conf_dir(env: Mapping[str, str]) -> Path:
    """The user's containers.conf.d that Podman run with `env` reads (rootless)."""
    return user_config_home(env) / "containers" / "containers.conf.d"


def cleanup_env(env: Mapping[str, str]) -> dict[str, str]:
    """Of Podman's environment `env`, what conmon gives `podman container cleanup` that decides
    which containers.conf files it reads: HOME and CONTAINERS_CONF, and an empty
    XDG_CONFIG_HOME (spec/podman.md §3; seen in /proc/CONMON/environ with Podman 4.3)."""
    out = {"XDG_CONFIG_HOME": ""}
    for name in ("HOME", "CONTAINERS_CONF"):
        if env.get(name):
            out[name] = env[name]
    return out


def _same_dir(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def cleanup_conf_dir(env: Mapping[str, str]) -> Path | None:
    """The user containers.conf.d the cleanup of a stopped container reads, if it is not the
    one Podman reads (a custom XDG_CONFIG_HOME); None when both read the same files."""
    if env.get("CONTAINERS_CONF"):
        return None  # both read only that file: conmon passes it on
    theirs = user_conf_dir(cleanup_env(env))
    return None if _same_dir(user_conf_dir(env), theirs) else theirs


def user_data_home(env: Mapping[str, str]) -> Path:
    xdg = env.get("XDG_DATA_HOME", "")
    return Path(xdg) if xdg.startswith("/") else _home(env) / ".local" / "share"


def entry_point(name: str) -> Path:
    """`.venv/bin/<name>` of the installation running this code (not resolved: keep the venv)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return candidate.absolute()
    import shutil

    found = shutil.which(name)
    if found:
        return Path(found).absolute()
    raise BurrowError(f"cannot find burrow's `{name}` entry point next to {sys.executable} "
                      f"or on PATH; install burrow first (scripts/install)")


@dataclass(frozen=True)
class Scope:
    name: str  # "system" or "user"
    conf_dir: Path  # the containers.conf.d directory the drop-in goes to
    helper_dir: Path
    # --user with a custom XDG_CONFIG_HOME: the drop-in goes here too, where the cleanup
    # of a stopped container reads it (see the module doc). None: nowhere else.
    cleanup_conf_dir: Path | None = None

    @property
    def dropin(self) -> Path:
        return self.conf_dir / DROPIN_NAME

    @property
    def cleanup_dropin(self) -> Path | None:
        return self.cleanup_conf_dir / DROPIN_NAME if self.cleanup_conf_dir is not None else None

    @property
    def helpers(self) -> dict[str, str]:
        """The helper names this scope links, and burrow's entry point for each."""
        return USER_HELPERS if self.name == "user" else HELPERS


def resolve_scope(system: bool, user: bool, conf_dir: str | None, helper_dir: str | None,
                  env: Mapping[str, str] | None = None, euid: int | None = None,
                  *, writing: bool = True) -> Scope:
    env = os.environ if env is None else env
    euid = os.geteuid() if euid is None else euid
    if system and user:
        raise BurrowError("use either --system or --user, not both")
    name = "system" if system else "user" if user else ("system" if euid == 0 else "user")
    if name == "system":
        if writing and euid != 0 and conf_dir is None:
            raise BurrowError("--system changes /etc/containers/containers.conf.d/ and needs root; "
                              "run it with sudo, or use --user for your own Podman")
        cdir = Path(conf_dir) if conf_dir else ETC_DROPIN_DIR
        hdir = Path(helper_dir) if helper_dir else Path(sys.prefix) / "libexec" / "burrow-podman"
        return Scope(name, cdir.absolute(), hdir.absolute())
    cdir = Path(conf_dir) if conf_dir else user_conf_dir(env)
    hdir = Path(helper_dir) if helper_dir else user_data_home(env) / "burrow" / "podman"
    # A --conf-dir elsewhere is the caller's own choice: written there only.
    cleanup = cleanup_conf_dir(env) if _same_dir(cdir, user_conf_dir(env)) else None
    return Scope(name, cdir.absolute(), hdir.absolute(), cleanup)


# -- Podman's config chain --------------------------------------------------------------------
def config_chain(rootless: bool, env: Mapping[str, str], extra_dropin_dir: Path | None = None
                 ) -> list[Path]:
    """The files Podman 4.3 merges, in order (later wins), as containers/common v0.50 does:
    /usr/share/containers/containers.conf, /etc/containers/containers.conf, its `.d/*.conf`,
    then (rootless only) $XDG_CONFIG_HOME/containers/containers.conf and its `.d/*.conf`.

    CONTAINERS_CONF replaces the whole chain with that one file. `extra_dropin_dir` is a
    redirected drop-in directory (`--conf-dir`), read after the standard ones of its scope.
    """
    only = env.get("CONTAINERS_CONF")
    if only:
        return [Path(only)]
    files = [f for f in (SYSTEM_CONF, ETC_CONF) if f.is_file()]
    seen = [ETC_DROPIN_DIR]
    files += _dropins(ETC_DROPIN_DIR)
    if not rootless and extra_dropin_dir is not None and extra_dropin_dir not in seen:
        files += _dropins(extra_dropin_dir)
    if rootless:
        user_conf = user_config_home(env) / "containers" / "containers.conf"
        if user_conf.is_file():
            files.append(user_conf)
        udir = Path(str(user_conf) + ".d")
        seen.append(udir)
        files += _dropins(udir)
        if extra_dropin_dir is not None and extra_dropin_dir not in seen:
            files += _dropins(extra_dropin_dir)
    return files


def _dropins(d: Path) -> list[Path]:
    try:
        return sorted(p for p in d.iterdir() if p.suffix == ".conf" and p.is_file())
    except OSError:
        return []


@dataclass
class Effective:
    helper_binaries_dir: list[str] = field(default_factory=lambda: list(PODMAN_DEFAULT_HELPER_DIRS))
    helper_source: str = "built-in default"
    engine_env: list[str] = field(default_factory=list)  # [engine] env: Podman's and its helpers'
    env_source: str = "built-in default"
    network_backend: str = ""
    backend_source: str = "built-in default"
    errors: list[str] = field(default_factory=list)


def merge(files: Sequence[Path], skip: Path | None = None) -> Effective:
    import tomllib

    eff = Effective()
    for f in files:
        if skip is not None and f.absolute() == skip:
            continue
        try:
            data = tomllib.loads(f.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            eff.errors.append(f"{f}: {exc}")
            continue
        engine = data.get("engine", {})
        if isinstance(engine, dict) and isinstance(engine.get("helper_binaries_dir"), list):
            eff.helper_binaries_dir = [str(x) for x in engine["helper_binaries_dir"]]
            eff.helper_source = str(f)
        if isinstance(engine, dict) and isinstance(engine.get("env"), list):
            eff.engine_env = [str(x) for x in engine["env"]]
            eff.env_source = str(f)
        network = data.get("network", {})
        if isinstance(network, dict) and isinstance(network.get("network_backend"), str):
            eff.network_backend = network["network_backend"]
            eff.backend_source = str(f)
    return eff


def find_helper(name: str, dirs: Sequence[str]) -> Path | None:
    """Podman's FindHelperBinary: the first dir holding an executable file of that name (a path
    it may not stat, e.g. inside another user's private home, is skipped, as Podman does)."""
    for d in dirs:
        p = Path(os.path.expanduser(d)) / name
        try:
            if p.is_file() and os.access(p, os.X_OK):
                return p
        except OSError:
            continue
    return None


def unreachable_helpers(dirs: Sequence[str], names: Sequence[str]) -> list[str]:
    """Helper directories this user cannot search, and helpers in them it cannot run
    (permission denied): the diagnosis of a system-wide enable from a private install."""
    out = []
    for d in dirs:
        hdir = Path(os.path.expanduser(d))
        try:
            os.stat(hdir / names[0])
        except PermissionError:
            out.append(f"{hdir}/")  # the directory (or one above it) cannot be entered
            continue
        except OSError:
            pass
        for name in names:
            p = hdir / name
            try:
                if p.is_file() and not os.access(p, os.X_OK):
                    out.append(str(p))
            except OSError:
                out.append(str(p))
    return out


def is_burrow(path: Path | None) -> bool:
    if path is None:
        return False
    try:
        real = path.resolve()
    except OSError:
        return False
    if real.name in ALL_HELPERS.values():
        return True
    try:  # a generated script rather than a link
        head = real.read_bytes()[:512]
    except OSError:
        return False
    return any(m in head for m in (b"netns.client", b"netns.dns", b"rootless.rootlessport"))


# -- the firewall driver ----------------------------------------------------------------------
# Netavark before 1.9 has no nftables driver: it writes iptables rules (Podman 4.x's netavark,
# Debian 12's 1.4). burrow-netavark's default is nftables, as netavark 2.x. A container set up
# with one driver and torn down with the other (`enable` or `disable` with containers running,
# whose teardown then runs the other tool) leaves its DNAT, masquerade and forward rules
# behind, and a stale DNAT for a host port can win over the next container's. So `enable` pins
# the driver of the netavark it stands in for, with NETAVARK_FW in [engine] env: Podman sets
# those variables for itself and every helper it runs, the cleanup's teardown included.
FW_ENV = "NETAVARK_FW"
NFTABLES_SINCE = (1, 9)


@dataclass(frozen=True)
class DriverPin:
    driver: str
    because: str  # the netavark it matches, e.g. "/usr/lib/podman/netavark 1.4"

    def comment(self) -> str:
        return (f"# burrow-netavark uses the {self.driver} firewall driver, as {self.because} "
                "does:\n# either tool then tears down the containers the other set up.\n")


def netavark_version(path: Path) -> tuple[int, int] | None:
    """(major, minor) from `netavark --version` ("netavark 1.4.0"); None if it won't say."""
    import re
    import subprocess

    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                             timeout=10, env={"PATH": os.defpath}, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"netavark (\d+)\.(\d+)", out.strip())
    return (int(m[1]), int(m[2])) if m else None


def firewall_pin(before: Effective) -> DriverPin | None:
    """The driver burrow-netavark must use to share Podman's world with the netavark it
    replaces (found where Podman looked before burrow); None when its default is right, or
    the user's own [engine] env already names one."""
    if any(e.partition("=")[0] == FW_ENV for e in before.engine_env):
        return None
    real = find_helper("netavark", before.helper_binaries_dir)
    if real is None or is_burrow(real):
        return None
    version = netavark_version(real)
    if version is None or version >= NFTABLES_SINCE:
        return None
    return DriverPin("iptables", f"{real} {version[0]}.{version[1]}")


def firewall_driver(eff: Effective, netavark_is_burrow: bool) -> str:
    """What the netavark Podman runs will use, as `podman status` says it."""
    for e in eff.engine_env:
        name, _, value = e.partition("=")
        if name == FW_ENV:
            return value
    return "nftables (burrow's default)" if netavark_is_burrow else "netavark's own default"


# -- the change --------------------------------------------------------------------------------
def render_dropin(helper_dir: Path, search_after: Sequence[str], pin: DriverPin | None = None,
                  env_before: Sequence[str] = ()) -> str:
    dirs = [str(helper_dir)] + [d for d in search_after if d != str(helper_dir)]
    body = ",\n".join(f"  {json.dumps(d)}" for d in dirs)
    env = ""
    if pin is not None:  # the env Podman had, and the driver: a list replaces, never adds
        values = ", ".join(json.dumps(v) for v in [*env_before, f"{FW_ENV}={pin.driver}"])
        env = f"{pin.comment()}env = [{values}]\n"
    return (
        f"{MARKER}\n"
        "# Podman runs burrow's helpers (netavark, aardvark-dns, rootless: rootlessport) from\n"
        "# the first directory below.\n"
        "# Undo with `burrow podman disable` (or delete this file).\n"
        "[engine]\n"
        f"helper_binaries_dir = [\n{body},\n]\n"
        f"{env}"
        "\n[network]\n"
        'network_backend = "netavark"\n'
    )


@dataclass(frozen=True)
class DropinEdit:
    """One drop-in file: what it holds now and what it will (None: absent / remove)."""

    path: Path
    old: str | None
    new: str | None

    def lines(self) -> list[str]:
        import difflib

        if self.old == self.new:
            return []
        path = self.path
        head = (f"remove {path}" if self.new is None
                else f"{'create' if self.old is None else 'update'} {path}:")
        return [head] + [ln.rstrip("\n") for ln in difflib.unified_diff(
            (self.old or "").splitlines(True), (self.new or "").splitlines(True),
            fromfile=str(path) if self.old is not None else "/dev/null",
            tofile=str(path) if self.new is not None else "/dev/null")]


@dataclass(frozen=True)
class Change:
    """What enable/disable will do; `lines()` is what the user is shown before it is done."""

    scope: Scope
    dropin_old: str | None
    dropin_new: str | None  # None: remove
    links: dict[str, Path | None]  # helper name -> target (None: remove)
    links_now: dict[str, str | None]
    rmdir_helper: bool = False
    notes: tuple[str, ...] = ()
    also: tuple[DropinEdit, ...] = ()  # the same drop-in where the cleanup reads it

    @property
    def dropins(self) -> tuple[DropinEdit, ...]:
        return (DropinEdit(self.scope.dropin, self.dropin_old, self.dropin_new), *self.also)

    @property
    def empty(self) -> bool:
        links_same = all(
            (str(t) if t is not None else None) == self.links_now.get(n) for n, t in self.links.items())
        return (all(d.old == d.new for d in self.dropins) and links_same
                and not self.rmdir_helper)

    def lines(self) -> list[str]:
        out = [line for d in self.dropins for line in d.lines()]
        for name, target in self.links.items():
            now = self.links_now.get(name)
            want = str(target) if target is not None else None
            if now == want:
                continue
            link = self.scope.helper_dir / name
            if want is None:
                out.append(f"remove {link} (-> {now})")
            else:
                out.append(f"link   {link} -> {want}" + (f" (was {now})" if now else ""))
        if self.rmdir_helper:
            out.append(f"remove {self.scope.helper_dir}/")
        return out + [f"note: {n}" for n in self.notes]


def _read(p: Path) -> str | None:
    try:
        return p.read_text()
    except FileNotFoundError:
        return None


def _link_now(p: Path) -> str | None:
    try:
        return os.readlink(p)
    except FileNotFoundError:
        return None
    except OSError:  # a regular file: not ours
        return f"<file {p}>" if p.exists() else None


def plan_enable(scope: Scope, env: Mapping[str, str] | None = None) -> Change:
    env = os.environ if env is None else env
    old = _read(scope.dropin)
    if old is not None and MARKER not in old:
        raise BurrowError(f"{scope.dropin} exists and was not written by burrow; "
                          "move it away or pick another --conf-dir")
    rootless = scope.name == "user"
    # What Podman would search without our drop-in, so we only put ourselves in front.
    before = merge(config_chain(rootless, env, scope.conf_dir), skip=scope.dropin)
    pin = firewall_pin(before)
    new = render_dropin(scope.helper_dir, before.helper_binaries_dir, pin, before.engine_env)
    links: dict[str, Path | None] = {n: entry_point(ep) for n, ep in HELPERS.items()}
    notes: list[str] = []
    for n, ep in scope.helpers.items():
        if n not in links:
            try:
                links[n] = entry_point(ep)
            except BurrowError:  # an install older than the entry point: the rest still works
                notes.append(f"{ep} is not installed (rerun scripts/install); Podman keeps its own {n}")
    now = {n: _link_now(scope.helper_dir / n) for n in links}
    for n, cur in now.items():
        if cur is not None and cur.startswith("<file"):
            raise BurrowError(f"{scope.helper_dir / n} is a regular file, not burrow's link; "
                              "remove it or pick another --helper-dir")
    if scope.name == "system":  # every user's Podman will run these: they must be able to
        from rootless.install_check import require_runnable_by_others

        require_runnable_by_others([p for p in links.values() if p is not None])
    if pin is not None and (old is None or f"{FW_ENV}={pin.driver}" not in old):
        notes.append(f"burrow-netavark will use the {pin.driver} firewall driver ({FW_ENV}), as "
                     f"{pin.because} does, so containers already running keep working and are "
                     "torn down cleanly by either tool (also after `disable`)")
    also = _plan_cleanup_dropin(scope, env)
    if also is not None and also.old != also.new:
        notes.append(
            f"{also.path} too: conmon runs a stopped container's `podman container cleanup` "
            f"(its network teardown) with HOME but not XDG_CONFIG_HOME, so it reads "
            f"{also.path.parent.parent}, not {scope.conf_dir.parent}")
    return Change(scope, old, new, links, now, notes=tuple(notes),
                  also=() if also is None else (also,))


def _plan_cleanup_dropin(scope: Scope, env: Mapping[str, str]) -> DropinEdit | None:
    """The drop-in for the cleanup's config dir, computed against the cleanup's own chain."""
    path = scope.cleanup_dropin
    if path is None:
        return None
    old = _read(path)
    if old is not None and MARKER not in old:
        raise BurrowError(f"{path} exists and was not written by burrow (it is where `podman "
                          "container cleanup` reads your config); move it away")
    before = merge(config_chain(True, cleanup_env(env)), skip=path)
    return DropinEdit(path, old, render_dropin(scope.helper_dir, before.helper_binaries_dir,
                                               firewall_pin(before), before.engine_env))


def plan_disable(scope: Scope) -> Change:
    old = _read(scope.dropin)
    if old is not None and MARKER not in old:
        raise BurrowError(f"{scope.dropin} was not written by burrow; leaving it alone")
    # Every name burrow may have linked, whatever the scope: a link made by an older burrow or
    # under the other scope's rules still goes.
    now = {n: _link_now(scope.helper_dir / n) for n in ALL_HELPERS}
    links: dict[str, Path | None] = {}
    for n, cur in now.items():
        if cur is None:
            continue
        if cur.startswith("<file") or Path(cur).name != ALL_HELPERS[n]:
            raise BurrowError(f"{scope.helper_dir / n} is not burrow's link ({cur}); leaving it alone")
        links[n] = None
    rmdir = (scope.helper_dir / HELPER_MARKER).exists()
    also: tuple[DropinEdit, ...] = ()
    notes: tuple[str, ...] = ()
    path = scope.cleanup_dropin
    cleanup_old = _read(path) if path is not None else None
    if path is not None and cleanup_old is not None:
        if MARKER in cleanup_old:
            also = (DropinEdit(path, cleanup_old, None),)
        else:
            notes = (f"{path} was not written by burrow; leaving it alone",)
    return Change(scope, old, None, links, now, rmdir_helper=rmdir, notes=notes, also=also)


def apply(change: Change) -> None:
    try:
        _apply(change)
    except OSError as exc:
        raise BurrowError(f"{exc.filename or change.scope.dropin}: {exc.strerror}") from exc


def _apply(change: Change) -> None:
    s = change.scope
    if change.dropin_new is not None:
        s.helper_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        (s.helper_dir / HELPER_MARKER).write_text(
            "Made by `burrow podman enable`; `burrow podman disable` removes this directory.\n")
    for name, target in change.links.items():
        link = s.helper_dir / name
        if target is None:
            link.unlink(missing_ok=True)
        elif change.links_now.get(name) != str(target):
            tmp = link.with_name(f".{name}.tmp{os.getpid()}")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            tmp.replace(link)
    for d in change.dropins:
        if d.new is None:
            d.path.unlink(missing_ok=True)
        elif d.old != d.new:
            d.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            tmp = d.path.with_name(f".{DROPIN_NAME}.tmp{os.getpid()}")
            tmp.write_text(d.new)
            tmp.chmod(0o644)
            tmp.replace(d.path)
    if change.rmdir_helper:
        (s.helper_dir / HELPER_MARKER).unlink(missing_ok=True)
        try:
            s.helper_dir.rmdir()
        except OSError:
            pass  # something else lives there: leave it


def collect_status(scope: Scope, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if env is None else env
    rootless = scope.name == "user"
    chain = config_chain(rootless, env, scope.conf_dir)
    eff = merge(chain)
    nv = find_helper("netavark", eff.helper_binaries_dir)
    dns = find_helper("aardvark-dns", eff.helper_binaries_dir)
    rlp = find_helper("rootlessport", eff.helper_binaries_dir)
    backend = eff.network_backend or "netavark (Podman's choice when unset and no CNI state exists)"
    using = nv is not None and is_burrow(nv) and (eff.network_backend in ("", "netavark"))
    return {
        "scope": scope.name,
        "rootless": rootless,
        "enabled": scope.dropin.exists(),
        "dropin": str(scope.dropin),
        "cleanup_dropin": str(scope.cleanup_dropin) if scope.cleanup_dropin else None,
        "helper_dir": str(scope.helper_dir),
        "containers_conf_env": env.get("CONTAINERS_CONF") or None,
        "config_files": [str(f) for f in chain],
        "helper_binaries_dir": eff.helper_binaries_dir,
        "helper_binaries_dir_from": eff.helper_source,
        "network_backend": backend,
        "network_backend_from": eff.backend_source,
        "netavark": str(nv) if nv else None,
        "netavark_is_burrow": is_burrow(nv),
        "aardvark_dns": str(dns) if dns else None,
        "aardvark_dns_is_burrow": is_burrow(dns),
        "rootlessport": str(rlp) if rlp else None,
        "rootlessport_is_burrow": is_burrow(rlp),
        "podman_uses_burrow": using,
        "firewall_driver": firewall_driver(eff, is_burrow(nv)),
        "firewall_driver_from": eff.env_source if any(
            e.partition("=")[0] == FW_ENV for e in eff.engine_env) else "default",
        "unreachable": unreachable_helpers(eff.helper_binaries_dir, list(ALL_HELPERS)),
        "errors": eff.errors,
        "cleanup": _cleanup_status(scope, env) if rootless else None,
    }


def _cleanup_status(scope: Scope, env: Mapping[str, str]) -> dict[str, Any]:
    """Which netavark a stopped container's `podman container cleanup` runs for its teardown:
    it reads the files of `cleanup_env` (see the module doc). A --conf-dir elsewhere than
    $XDG_CONFIG_HOME is taken as read by it too, as by Podman."""
    extra = None if _same_dir(scope.conf_dir, user_conf_dir(env)) else scope.conf_dir
    chain = config_chain(True, cleanup_env(env), extra)
    eff = merge(chain)
    nv = find_helper("netavark", eff.helper_binaries_dir)
    return {
        "config_files": [str(f) for f in chain],
        "netavark": str(nv) if nv else None,
        "uses_burrow": nv is not None and is_burrow(nv) and eff.network_backend in ("", "netavark"),
    }


def cleanup_mismatch(info: Mapping[str, Any]) -> str | None:
    """The warning when setup and the cleanup's teardown would run different netavarks."""
    cleanup = info.get("cleanup")
    if not cleanup or cleanup["uses_burrow"] == info["podman_uses_burrow"]:
        return None
    runs = cleanup["netavark"] or "no netavark"
    return (
        f"warning: a stopped container's network teardown (`podman container cleanup`, started "
        f"by conmon with HOME but not XDG_CONFIG_HOME) reads "
        f"{', '.join(cleanup['config_files']) or 'no config file'} and runs {runs}, "
        f"{'not burrow' if info['podman_uses_burrow'] else 'burrow'}, while setup runs "
        f"{info['netavark'] or 'no netavark'}: with burrow's networks that leaves DNS records "
        "and firewall rules behind. Fix: run `burrow podman enable --user` (or `disable "
        "--user`) with this XDG_CONFIG_HOME, which writes (removes) the drop-in in both places")


def render_status(info: Mapping[str, Any]) -> str:
    def who(path: str | None, mine: bool) -> str:
        if path is None:
            return "not found"
        real = os.path.realpath(path)
        return f"{path}" + (f" -> {real}" if real != path else "") + (" (burrow)" if mine else "")

    lines = [
        f"scope:            {info['scope']}{' (rootless)' if info['rootless'] else ''}",
        f"burrow drop-in:   {info['dropin']} ({'present' if info['enabled'] else 'absent'})",
        *([f"  for cleanup:    {info['cleanup_dropin']} "
           f"({'present' if Path(info['cleanup_dropin']).exists() else 'absent'})"]
          if info.get("cleanup_dropin") else []),
        f"network backend:  {info['network_backend']}  [from {info['network_backend_from']}]",
        f"netavark:         {who(info['netavark'], info['netavark_is_burrow'])}",
        f"aardvark-dns:     {who(info['aardvark_dns'], info['aardvark_dns_is_burrow'])}",
        f"rootlessport:     {who(info['rootlessport'], info['rootlessport_is_burrow'])}",
        f"firewall driver:  {info['firewall_driver']}"
        + (f"  [from {info['firewall_driver_from']}]" if info["firewall_driver_from"] != "default"
           else ""),
        f"helper dirs:      {', '.join(info['helper_binaries_dir'])}  "
        f"[from {info['helper_binaries_dir_from']}]",
        f"config files:     {', '.join(info['config_files']) or '(none)'}",
        f"Podman uses burrow: {'yes' if info['podman_uses_burrow'] else 'no'}",
    ]
    if info["containers_conf_env"]:
        lines.append(f"note: CONTAINERS_CONF={info['containers_conf_env']} makes Podman read only that "
                     "file; drop-ins are ignored while it is set")
    lines += [f"warning: cannot read {e}" for e in info["errors"]]
    mismatch = cleanup_mismatch(info)
    if mismatch:
        lines.append(mismatch)
    if info.get("unreachable"):
        lines.append(
            f"warning: you (uid {os.getuid()}) cannot run {', '.join(info['unreachable'])} "
            "(permission denied): Podman run by you skips it and uses the next one listed above. "
            "The burrow install it points to is not readable by other users; fix: root installs "
            "burrow where every user can read it (e.g. a venv in /opt/burrow) and runs "
            "`burrow podman enable --system` from there, which checks this")
    return "\n".join(lines)


# -- CLI --------------------------------------------------------------------------------------
podman_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None,
    help="Use burrow as real Podman's network backend (netavark + aardvark-dns; rootless: + "
         "rootlessport).\n\nExamples: `burrow podman enable --user --dry-run` (show the change "
         "only), `burrow podman enable --user`, `burrow podman status`, `burrow podman disable "
         "--user`; for every user: `sudo burrow podman enable --system`.")

SystemOpt = Annotated[bool, typer.Option("--system", help="all users: /etc/containers (root only)")]
UserOpt = Annotated[bool, typer.Option("--user", help="your own Podman: ~/.config/containers")]
ConfDirOpt = Annotated[str | None, typer.Option(
    "--conf-dir", help="containers.conf.d directory to write to instead (env BURROW_PODMAN_CONF_DIR)")]
HelperDirOpt = Annotated[str | None, typer.Option(
    "--helper-dir", help="where the netavark/aardvark-dns links go (env BURROW_PODMAN_HELPER_DIR)")]


def _format(value: str) -> str:
    """--format: a usage error (exit 2) naming the choices, as every other burrow --format."""
    if value not in ("table", "json"):
        raise typer.BadParameter(f"{value!r}; use table or json")
    return value


FormatOpt = Annotated[str, typer.Option("--format", metavar="table|json", callback=_format,
                                        help="table or json")]


def _dirs(c: typer.Context, conf_dir: str | None, helper_dir: str | None
          ) -> tuple[str | None, str | None]:
    """The flags, else BURROW_PODMAN_CONF_DIR / BURROW_PODMAN_HELPER_DIR from the settings."""
    from rootless.cli import ctx

    settings = ctx(c).settings
    return conf_dir or settings.podman_conf_dir, helper_dir or settings.podman_helper_dir


def _show(change: Change) -> None:
    for line in change.lines():
        print(line)


def _carry_out(change: Change, dry_run: bool, *, unchanged: str, done: str) -> bool:
    """Show the change, then make it unless it's a dry run; True when something was written."""
    if change.empty:
        print(unchanged)
        return False
    _show(change)
    if dry_run:
        print("dry run: nothing changed")
        return False
    apply(change)
    print(done)
    return True


@podman_app.command("enable")
def enable(c: typer.Context, system: SystemOpt = False, user: UserOpt = False, conf_dir: ConfDirOpt = None,
           helper_dir: HelperDirOpt = None,
           dry_run: Annotated[bool, typer.Option("--dry-run", help="only show the change")] = False,
           ) -> None:
    """Make Podman run burrow's netavark and aardvark-dns, and rootless Podman burrow's
    rootlessport (shows the change, then writes it).

    Without --system or --user: --user, or --system when run by root. Containers already
    running keep their ports and names; whichever backend is enabled when one stops tears it
    down.

    \b
    Examples:
      burrow podman enable --user --dry-run   # only show the change
      burrow podman enable --user
      burrow podman status                    # which netavark Podman runs now
    """
    scope = resolve_scope(system, user, *_dirs(c, conf_dir, helper_dir))
    if not _carry_out(plan_enable(scope), dry_run,
                      unchanged=f"already enabled ({scope.name}): {scope.dropin}; nothing to change",
                      done=f"enabled ({scope.name}). Undo with `burrow podman disable --{scope.name}`."):
        return
    if os.environ.get("CONTAINERS_CONF"):
        print(f"note: CONTAINERS_CONF={os.environ['CONTAINERS_CONF']} is set; Podman ignores "
              "drop-ins while it is", file=sys.stderr)


@podman_app.command("disable")
def disable(c: typer.Context, system: SystemOpt = False, user: UserOpt = False, conf_dir: ConfDirOpt = None,
            helper_dir: HelperDirOpt = None,
            dry_run: Annotated[bool, typer.Option("--dry-run", help="only show the change")] = False,
            ) -> None:
    """Remove burrow's drop-in and helper links; Podman goes back to its own netavark.

    Without --system or --user: --user, or --system when run by root. Containers already
    running keep working; Podman's netavark tears them down when they stop. Example: `burrow
    podman disable --user`."""
    scope = resolve_scope(system, user, *_dirs(c, conf_dir, helper_dir))
    _carry_out(plan_disable(scope), dry_run, unchanged=f"not enabled ({scope.name}): nothing to remove",
               done=f"disabled ({scope.name})")


@podman_app.command("status")
def status(c: typer.Context, system: SystemOpt = False, user: UserOpt = False, conf_dir: ConfDirOpt = None,
           helper_dir: HelperDirOpt = None,
           fmt: FormatOpt = "table") -> None:
    """Which netavark, aardvark-dns and rootlessport Podman will run, and from which config file."""
    scope = resolve_scope(system, user, *_dirs(c, conf_dir, helper_dir), writing=False)
    info = collect_status(scope)
    print(json.dumps(info, indent=2) if fmt == "json" else render_status(info))
