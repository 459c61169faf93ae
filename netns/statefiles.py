"""The names of the engine's state files, spelled once.

Everything under a Netavark `--config` directory that burrow or aardvark-dns reads by name is
listed here; `rootless/paths.py` is the one place for the per-user world's own files. Kept free
of imports: the stdlib-only thin client reads it on every call.
"""

from __future__ import annotations

ENGINE_SOCK = "burrow-engine.sock"  # the warm engine of a --config dir
ENGINE_LOCK = "burrow.lock"  # one setup/teardown at a time per --config dir
AARDVARK_DIR = "aardvark-dns"  # Aardvark-format DNS config, one file per network
AARDVARK_PID = "aardvark.pid"  # inside AARDVARK_DIR, as aardvark-dns writes it
AARDVARK_LOCK = "aardvark.lock"  # beside AARDVARK_DIR, as netavark takes it
# burrow-dns's counts for `burrow status` (netns/dns/limits.py), inside AARDVARK_DIR: a dotfile,
# so no network can be named like it and no DNS server reads it as a network's config.
DNS_STATS = ".burrow-dns-stats.json"
# burrow-dns's reload socket (netns/dns/control.py), inside AARDVARK_DIR, a dotfile for the same
# reason; aardvark-dns 1.4 reads every other file as a network, so a start of it removes both.
DNS_CONTROL = ".burrow-dns.sock"
FIREWALL_DIR = "firewall"
FIREWALL_LOCK = "lock"  # inside FIREWALL_DIR; non-empty while state may be behind the kernel
FIREWALL_APPLYING = "applying"  # inside FIREWALL_DIR: older burrows' mark (read, then removed)
FIREWALL_DRIVER = "firewall-driver"  # inside FIREWALL_DIR, Netavark's name and content
FIREWALL_NETWORKS = "networks"  # inside FIREWALL_DIR: networks/<netid>, Netavark's SetupNetwork
FIREWALL_PORTS = "ports"  # inside FIREWALL_DIR: ports/<netid>_<cid>, Netavark's PortForwardConfig
FIREWALL_LEDGER = ".burrow-ledger.json"  # inside FIREWALL_DIR: what each backend knows is installed
FIREWALL_HANDLES = ".burrow-nft-handles"  # inside FIREWALL_DIR: <portkey> -> its rules' handles
FIREWALL_IPT_HANDLES = ".burrow-ipt-handles"  # the same for the iptables driver (iptables-nft)
FIREWALL_OLD_INSTALLED = "installed.json"  # inside FIREWALL_DIR: the old state layout's mark


SOCK_SUFFIX = ".sock"
LOG_SUFFIX = ".log"
# What engine_sock_for makes, and the log beside each socket (the engine's single-instance lock).
ENGINE_NAME_RE = r"engine-\d+-\d+\.(sock|log)\Z"


def engine_sock_for(net: int, user: int) -> str:
    """The socket of an engine started without --config, keyed by netns and user ns."""
    return f"engine-{net}-{user}{SOCK_SUFFIX}"


def engine_log_for(sock_path: str) -> str:
    """The log beside an engine's socket (`burrow-engine.sock` -> `burrow-engine.log`)."""
    base = sock_path[: -len(SOCK_SUFFIX)] if sock_path.endswith(SOCK_SUFFIX) else sock_path
    return base + LOG_SUFFIX


def engine_sock_for_log(log_path: str) -> str:
    return log_path[: -len(LOG_SUFFIX)] + SOCK_SUFFIX
# burrow-cni's IPAM, host-local's own names under <dataDir>/<network>/ (netns/cni/hostlocal.py).
CNI_IPAM_LOCK = "lock"
CNI_IPAM_LAST = "last_reserved_ip."  # + the range set's index
# burrow-cni: what each ADD asked for (ports, names), under the CNI state dir, so that DEL and GC
# can undo it when the runtime does not send it again (netns/cni/attachments.py).
CNI_ATTACHMENTS_DIR = "cni-attachments"


# -- reading and writing them: the one way (imports inside, so the client pays nothing) ----------

TYPE_CHECKING = False
if TYPE_CHECKING:
    import os

    StrPath = str | os.PathLike[str]


def _open_regular(path: StrPath, flags: int) -> int:
    import errno
    import os
    import stat

    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise OSError(errno.ELOOP, f"{path} is a symlink (never followed): remove it") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file: remove it")
    return fd


def read_bytes(path: StrPath) -> bytes:
    """A state file's content. Never through a symlink and never blocking: a FIFO planted as a
    state file hung setup (and so Podman) for good, a symlinked one was read, or written,
    elsewhere. Not a regular file: OSError naming the fix."""
    import os

    fd = _open_regular(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: StrPath) -> str:
    """`read_bytes`, decoded: bad UTF-8 is a ValueError, as bad JSON is."""
    return read_bytes(path).decode()


def replace_text(path: StrPath, text: str, mode: int = 0o644) -> None:
    """Atomically replace `path` with `text`, through a fresh temporary beside it: a symlink
    planted as the temporary name was followed, and its target overwritten (with root's rights,
    in rootful use). A crash's leftover temporary is removed first."""
    import os

    tmp = os.path.join(os.path.dirname(os.fspath(path)), f".{os.path.basename(os.fspath(path))}.tmp")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def append_text(path: StrPath, text: str) -> None:
    """Append to an existing state file, with `read_bytes`'s rules (no symlink, no blocking)."""
    import os

    fd = _open_regular(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def private_dir(path: StrPath, *, shared: bool = False) -> None:
    """Make `path` (with its parents) if missing, then require what keeps other users out of
    the engine's state: a directory, not a symlink, of ours or root's, that no other user may
    write. Root's setup trusts what it reads there (firewall rules to delete, DNS records and
    servers to serve): in a config dir others may write (netavark 1.4's default `/tmp`), a
    `firewall/` or `aardvark-dns/` another user made first was written to and read back.
    `shared`: the config dir itself may be sticky and world-writable like /tmp (its entries
    can then be made, but not replaced, by others: each is checked by this before use).
    BurrowError naming the fix (OSError if it cannot be made)."""
    import os
    import stat

    from netns.errors import BurrowError

    os.makedirs(path, exist_ok=True)
    st = os.stat(path) if shared else os.lstat(path)
    uid, mode = os.geteuid(), stat.S_IMODE(st.st_mode)
    ours = "root" if uid == 0 else f"uid {uid} or root"
    fix = "; remove it, or pass --config a directory only you can write"
    if stat.S_ISLNK(st.st_mode):
        raise BurrowError(f"{path} is a symlink (never followed){fix}")
    if not stat.S_ISDIR(st.st_mode):
        raise BurrowError(f"{path} is not a directory: remove it")
    if st.st_uid not in (uid, 0):
        raise BurrowError(f"{path} belongs to uid {st.st_uid}, not to {ours}: another user "
                          f"could change burrow's state there{fix}")
    # A group of its own (umask 002 with user private groups) is no other user.
    others = mode & 0o002 or (mode & 0o020 and st.st_gid not in (os.getegid(), 0))
    if others and not (shared and mode & stat.S_ISVTX):
        raise BurrowError(f"{path} may be written by other users (mode {mode:04o}): "
                          f"`chmod go-w {path}`{fix}")
