"""`burrow-rootlessport`: Podman execs it as `rootlessport` (spec/rootlessport.md §2-4).

Phase 1 (stdlib only, before Podman is released): read the config from stdin, bind every
host port and the control socket, point fds 1 and 2 at /dev/null (Podman's pipes break once
it exits), write "1" to ReadyFD. A failure before that is one line on stdout (Podman shows
`Error: rootlessport <line>` and `podman run` exits 126) and exit status 1.
Phase 2: burrow's forwarder serves the bound listeners until ExitFD reaches EOF (forward.py).
Its imports wait until there is work (a client, a control packet) or `IMPORT_AFTER` seconds have
passed: right after ready, Podman is still starting the container on the same cores, and an
import there added ~30 ms to `podman run -p`. Clients meanwhile wait in the listen queue.
"""

from __future__ import annotations

import _signal  # not `signal` (and `enum` behind it): light.py
import os
import select
import sys

from rootless.ports.fdlimit import raise_fd_limit
from rootless.rootlessport.config import MAX_CONFIG, Config, ConfigError, check_netns, parse
from rootless.rootlessport.listen import BindError, Bound, ControlSocket, bind_all, bind_control

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType


def read_stdin(limit: int = MAX_CONFIG) -> bytes:
    """Up to EOF (Podman closes the pipe after writing), at most limit + 1 bytes."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = os.read(0, 65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def fail(line: str) -> int:
    """The error line Podman reads from stdout (it adds `Error: rootlessport `)."""
    os.write(1, line.replace("\n", " ").encode(errors="replace") + b"\n")
    return 1


def start() -> tuple[Config, list[Bound], ControlSocket | None]:
    cfg = parse(read_stdin())
    check_netns(cfg.netns_path)
    raise_fd_limit()  # as Go does at start-up: a -p range of 1,000+ ports needs the fds now
    bound = bind_all(cfg)
    try:
        ctl = bind_control(cfg) if cfg.rootless_cni else None
    except BaseException:
        for b in bound:
            b.sock.close()
        raise
    return cfg, bound, ctl


def release(cfg: Config) -> None:
    """Podman stops reading our stdout/stderr once ready: nothing may write there after."""
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    os.write(cfg.ready_fd, b"1")
    os.close(cfg.ready_fd)


IMPORT_AFTER = 1.0  # seconds: past `podman run`'s own start-up, short enough to be warm early


class _Stopped(Exception):
    pass


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def wait_for_work(cfg: Config, bound: list[Bound], ctl: ControlSocket | None,
                  timeout: float = IMPORT_AFTER) -> bool:
    """Until a listener or the control socket is readable, or the timeout; False if ExitFD
    reached EOF or SIGTERM/SIGINT came first (nothing to serve: phase 2 would only exit)."""
    poller = select.poll()
    for fd in [b.sock.fileno() for b in bound] + ([ctl.sock.fileno()] if ctl else []):
        poller.register(fd, select.POLLIN)
    poller.register(cfg.exit_fd, select.POLLIN)
    old = {sig: _signal.signal(sig, _stop) for sig in (_signal.SIGTERM, _signal.SIGINT)}
    try:
        events = poller.poll(timeout * 1000)
    except _Stopped:
        return False
    finally:
        for sig, handler in old.items():
            _signal.signal(sig, handler)
    return all(fd != cfg.exit_fd for fd, _ in events)


def close_all(bound: list[Bound], ctl: ControlSocket | None) -> None:
    for b in bound:
        b.sock.close()
    if ctl is not None:
        ctl.close()  # unlinks the socket, as phase 2's clean exit does


def main() -> int:
    try:
        cfg, bound, ctl = start()
    except (ConfigError, BindError) as e:
        return fail(str(e))
    except Exception as e:  # a bug must still reach the user as a line, not a traceback
        return fail(f"internal error: {type(e).__name__}: {e}")
    release(cfg)
    from netns import proctitle  # after ready; `ps` names the container before phase 2 runs

    proctitle.set_title(f"burrow-rootlessport {cfg.container_id[:12]}")
    if not wait_for_work(cfg, bound, ctl):
        close_all(bound, ctl)
        return 0
    from rootless.rootlessport.forward import serve  # phase 2: the heavy imports

    return serve(cfg, bound, ctl)


if __name__ == "__main__":
    sys.exit(main())
