"""The stdin JSON Podman 4.3 writes to rootlessport, parsed into a frozen record.

Go field names (spec/rootlessport.md §3); unknown keys are ignored as Go does. Every field is
checked here, once, before anything is bound: the input comes from another program and a bad
one must end in one clear error line, never a half-started forwarder. No rootless.ports
import and only the lightest stdlib: this runs before Podman is released (see the package
doc). For the same reason the records are NamedTuples (immutable, typed) rather than
dataclasses, addresses are checked with inet_pton rather than ipaddress, and neither `json`,
`re`, `socket` nor `typing` is imported (light.py).
"""

from __future__ import annotations

import _socket
import os
from stat import S_ISREG

from netns.jsonscan import NotJson, loads
from rootless.rootlessport.light import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_CONFIG = 1 << 20  # bytes of stdin; Podman's is a few hundred per mapping
MAX_MAPPINGS = 4096
MAX_FORWARDS = 65536  # host ports over all mappings, ranges and protocols
MAX_PATH = 4096
HEX = "0123456789abcdef"
PROTOCOLS = ("tcp", "udp")
DEFAULT_CHILD_IP = "127.0.0.1"  # upstream: an empty ChildIP dials the container's loopback


class ConfigError(ValueError):
    """The input is unusable; the message is the error line Podman shows."""


class Forward(NamedTuple):
    """One host port to one container port, for one protocol."""

    protocol: str  # "tcp" or "udp"
    host_ip: str  # "" = every address (v4 and v6)
    host_port: int
    container_port: int


class Config(NamedTuple):
    forwards: tuple[Forward, ...]
    netns_path: str
    exit_fd: int
    ready_fd: int
    tmp_dir: str
    child_ip: str
    container_id: str
    rootless_cni: bool


def _get(obj: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    value = obj.get(key, default)
    if value is None and default is not None:
        value = default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"config field {key!r} must be {_KIND[kind]}, got {value!r:.60}")
    return value


_KIND = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "an object"}


def path_field(obj: dict[str, Any], key: str, required: bool) -> str:
    """An absolute, normalised path without NUL: nothing a relative open could escape."""
    text: str = _get(obj, key, str, "")
    if not text and not required:
        return ""
    if not text.startswith("/") or len(text) > MAX_PATH or "\0" in text \
            or os.path.normpath(text) != text:
        raise ConfigError(f"config field {key!r} must be an absolute, normalised path, "
                          f"got {text!r:.80}")
    return text


NS_GET_NSTYPE = 0xB703  # ioctl on a namespace file: its CLONE_NEW* type
CLONE_NEWNET = 0x40000000


def check_netns(path: str) -> None:
    """The path opens as a network namespace: a wrong one fails `podman run` here, not each
    connection later (upstream fails when its child cannot enter it)."""
    import fcntl  # a C module: nothing to speak of at start-up

    try:
        # Never block in open(): a FIFO there held `podman run` forever. O_NONBLOCK opens one
        # at once, and a namespace file (nsfs, a regular file to stat) is not affected by it;
        # anything but a regular file is refused before it is opened at all (a device).
        if not S_ISREG(os.stat(path).st_mode):
            raise ConfigError(f"NetNSPath {path} is not a network namespace")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"cannot open NetNSPath {path}: {e.strerror}") from None
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        kind = -1
    finally:
        os.close(fd)
    if kind != CLONE_NEWNET:
        raise ConfigError(f"NetNSPath {path} is not a network namespace")


def ip_text(value: str, what: str) -> str:
    """An IPv4 or IPv6 address, spelled canonically (`::0001` is `::1`); no zone index."""
    for fam in (_socket.AF_INET, _socket.AF_INET6):
        try:
            return _socket.inet_ntop(fam, _socket.inet_pton(fam, value))
        except (OSError, ValueError):
            continue
    raise ConfigError(f"{what} {value!r:.60} is not an IPv4 or IPv6 address")


def fd_field(obj: dict[str, Any], key: str) -> int:
    fd: int = _get(obj, key, int)
    if not 3 <= fd < 1 << 20:
        raise ConfigError(f"config field {key!r} must be an inherited fd >= 3, got {fd}")
    try:
        os.fstat(fd)
    except OSError:
        raise ConfigError(f"config field {key!r}: fd {fd} is not open") from None
    return fd


def _port(m: dict[str, Any], key: str, i: int) -> int:
    v = m.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 65535:
        raise ConfigError(f"Mappings[{i}].{key} must be a port 1-65535, got {v!r:.40}")
    return v


def mapping(m: Any, i: int) -> list[Forward]:
    if not isinstance(m, dict):
        raise ConfigError(f"Mappings[{i}] must be an object, got {m!r:.60}")
    host_ip = m.get("host_ip", "")
    if not isinstance(host_ip, str):
        raise ConfigError(f"Mappings[{i}].host_ip must be a string, got {host_ip!r:.60}")
    host_ip = ip_text(host_ip, f"Mappings[{i}].host_ip") if host_ip else ""
    hp, cp = _port(m, "host_port", i), _port(m, "container_port", i)
    rng = m.get("range", 1)
    if not isinstance(rng, int) or isinstance(rng, bool) or not 1 <= rng <= 65535:
        raise ConfigError(f"Mappings[{i}].range must be 1-65535, got {rng!r:.40}")
    if max(hp, cp) + rng - 1 > 65535:
        raise ConfigError(f"Mappings[{i}]: ports {hp}/{cp} with range {rng} go past 65535")
    proto = m.get("protocol", "tcp")
    if not isinstance(proto, str):
        raise ConfigError(f"Mappings[{i}].protocol must be a string, got {proto!r:.40}")
    protos = [p.strip().lower() for p in proto.split(",") if p.strip()] or ["tcp"]
    for p in protos:
        if p not in PROTOCOLS:
            raise ConfigError(f"Mappings[{i}]: protocol {p!r:.20} is not supported by rootlessport "
                              "(tcp and udp are)")
    return [Forward(p, host_ip, hp + k, cp + k) for p in dict.fromkeys(protos) for k in range(rng)]


def forwards(raw: Any) -> tuple[Forward, ...]:
    if raw is None:  # Go marshals a nil slice as null
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_MAPPINGS:
        raise ConfigError(f"config field 'Mappings' must be a list of at most {MAX_MAPPINGS} "
                          "port mappings")
    out: list[Forward] = []
    for i, m in enumerate(raw):
        out += mapping(m, i)
        if len(out) > MAX_FORWARDS:
            raise ConfigError(f"more than {MAX_FORWARDS} host ports in 'Mappings'")
    return tuple(out)


def parse(data: bytes) -> Config:
    """The whole config, or ConfigError naming the first bad field."""
    if len(data) > MAX_CONFIG:
        raise ConfigError(f"config on stdin is larger than {MAX_CONFIG} bytes")
    try:
        obj = loads(data)
    except NotJson as e:
        raise ConfigError(f"config on stdin is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ConfigError("config on stdin must be a JSON object")
    cid = _get(obj, "ContainerID", str, "")
    if len(cid) != 64 or cid.strip(HEX):
        raise ConfigError(f"config field 'ContainerID' must be 64 hex digits, got {cid!r:.80}")
    cni = _get(obj, "RootlessCNI", bool, False)
    exit_fd, ready_fd = fd_field(obj, "ExitFD"), fd_field(obj, "ReadyFD")
    if exit_fd == ready_fd:
        raise ConfigError(f"ExitFD and ReadyFD are the same fd ({exit_fd})")
    child = _get(obj, "ChildIP", str, "")
    return Config(
        forwards=forwards(obj.get("Mappings")),
        netns_path=path_field(obj, "NetNSPath", required=True),
        exit_fd=exit_fd, ready_fd=ready_fd,
        # The control socket lives under TmpDir: needed only when there is one.
        tmp_dir=path_field(obj, "TmpDir", required=cni),
        child_ip=ip_text(child, "ChildIP") if child else DEFAULT_CHILD_IP,
        container_id=cid, rootless_cni=cni)
