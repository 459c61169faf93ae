"""Bind the host ports and the control socket, before Podman is released.

Every port is bound before ready (a taken port must fail `podman run`), so this runs in
phase 1 and imports only the stdlib. The listeners are handed to burrow's forwarder in phase 2;
until then the kernel queues connections in their backlog and datagrams in their buffers.

Errors are upstream's lines (`listen tcp 0.0.0.0:8096: bind: address already in use`, which
Podman prints after `Error: rootlessport `), word for word.
"""

from __future__ import annotations

# `_socket`, not `socket` (light.py): phase 2 adopts these as socket.socket (forward.adopt).
import _socket
import errno
import os

from rootless.ports import inhost
from rootless.ports.portfloor import unprivileged_port_start
from rootless.rootlessport.config import Config, Forward
from rootless.rootlessport.light import NamedTuple

BACKLOG = 4096
CONTROL_DIR = "rp"  # TmpDir/rp/<ContainerID>, as upstream


class BindError(Exception):
    """A host port or the control socket could not be bound; str() is Podman's error line."""


class Bound(NamedTuple):
    forward: Forward
    sock: _socket.socket


def _error_line(e: OSError, fw: Forward, addr: str) -> str:
    """Upstream's line, word for word (scripts and Podman's own tests match on it): Go's
    `listen tcp 0.0.0.0:8096: bind: address already in use`, and for a port below the
    unprivileged start the sentence rootlesskit's builtin driver puts before it."""
    where = f"[{addr}]:{fw.host_port}" if ":" in addr else f"{addr}:{fw.host_port}"
    text = (e.strerror or str(e)).lower()
    line = f"listen {fw.protocol} {where}: bind: {text}"
    if e.errno == errno.EACCES and fw.host_port < (floor := unprivileged_port_start()):
        line = (f"cannot expose privileged port {fw.host_port}, you can add "
                f"'net.ipv4.ip_unprivileged_port_start={fw.host_port}' to /etc/sysctl.conf "
                f"(currently {floor}), or choose a larger port number (>= {floor}): {line}")
    return line


def bind(fw: Forward) -> _socket.socket:
    """One listener. Any address: `::` with IPV6_V6ONLY off serves both families, as upstream
    (an IPv4-only host gets 0.0.0.0)."""
    kind = _socket.SOCK_DGRAM if fw.protocol == "udp" else _socket.SOCK_STREAM
    flags = kind | _socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC
    addr = fw.host_ip or "::"
    fam = _socket.AF_INET6 if ":" in addr else _socket.AF_INET
    try:
        s = _socket.socket(fam, flags)
    except OSError as e:
        if fw.host_ip or e.errno != errno.EAFNOSUPPORT:
            raise BindError(_error_line(e, fw, addr)) from None
        addr = "0.0.0.0"
        s = _socket.socket(_socket.AF_INET, flags)
    try:
        if fam == _socket.AF_INET6 and not fw.host_ip:
            s.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 0)
        if kind == _socket.SOCK_STREAM:
            s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            # Accepted sockets inherit it (rootless.ports.tcp counts on that), as Go sets it
            # on every connection: a small reply is not held back for the client's ACK.
            s.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            if inhost.loopback(addr):  # every client is on this host (rootless.ports.inhost)
                inhost.unpaced(s)
        s.bind((addr, fw.host_port))
        if kind == _socket.SOCK_STREAM:
            s.listen(BACKLOG)
    except OSError as e:
        s.close()
        raise BindError(_error_line(e, fw, "0.0.0.0" if not fw.host_ip else addr)) from None
    return s


def bind_all(cfg: Config) -> list[Bound]:
    """Every forward bound, or BindError with the others closed (all or nothing)."""
    out: list[Bound] = []
    try:
        for fw in cfg.forwards:
            out.append(Bound(fw, bind(fw)))
    except BaseException:
        for b in out:
            b.sock.close()
        raise
    return out


class ControlSocket(NamedTuple):
    sock: _socket.socket
    dir_fd: int  # TmpDir/rp, held open: the socket is unlinked through it on exit
    name: str

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.name, dir_fd=self.dir_fd)
        except OSError:
            pass
        os.close(self.dir_fd)


def bind_control(cfg: Config) -> ControlSocket:
    """`TmpDir/rp/<ContainerID>`, SOCK_SEQPACKET, `rp/` mode 0700, a stale socket unlinked
    first; bound through /proc/self/fd/<dirfd>/ because the full path may pass the 108-byte
    sun_path limit."""
    rp = os.path.join(cfg.tmp_dir, CONTROL_DIR)
    try:
        os.makedirs(rp, mode=0o700, exist_ok=True)
        # O_NOFOLLOW: an rp/ that is a symlink would have its target narrowed to 0700 below.
        dir_fd = os.open(rp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        what = "is a symlink: remove it" if os.path.islink(rp) else e.strerror
        raise BindError(f"control socket directory {rp}: {what}") from None
    # makedirs keeps a directory that was already there: its mode is what keeps other users
    # away from a socket that re-points this container's ports.
    st = os.fstat(dir_fd)
    if st.st_uid != os.getuid():
        os.close(dir_fd)
        raise BindError(f"control socket directory {rp} belongs to uid {st.st_uid}, not to "
                        f"uid {os.getuid()}: remove it")
    if st.st_mode & 0o077:
        os.fchmod(dir_fd, 0o700)
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC)
    try:
        try:
            os.unlink(cfg.container_id, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        s.bind(f"/proc/self/fd/{dir_fd}/{cfg.container_id}")
        s.listen(16)
    except OSError as e:
        s.close()
        os.close(dir_fd)
        raise BindError(f"control socket {rp}/{cfg.container_id}: {e.strerror}") from None
    return ControlSocket(s, dir_fd, cfg.container_id)
