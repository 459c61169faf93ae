"""Is the running DNS server of a config dir in another network namespace than this call?

A server listens on the gateways of the netns it was started in. Rootless Podman makes a new
rootless netns once its last container has gone; a server kept alive past that (records no
teardown removed) answers the next setup's reload from the dropped netns, and no container of
the new one can resolve a name (aardvark-dns 1.4 the same). The engine then stops it and
starts one here.
"""

from __future__ import annotations

import os

HERE = "/proc/thread-self/ns/net"  # setns is per thread: the engine enters the caller's


def serves_elsewhere(pid: int, config_dir: str | os.PathLike[str]) -> bool:
    """True only when `pid` is surely this dir's server (its command line names the dir: a
    recycled pid is left alone) and its netns is surely not this thread's."""
    try:
        theirs = os.stat(f"/proc/{pid}/ns/net")
        ours = os.stat(HERE)
        if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
            return False  # every setup asks: the common answer costs two stats
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().replace(b"\0", b" ").split()
    except OSError:
        return False
    names = {os.fsencode(config_dir), os.fsencode(os.path.abspath(config_dir))}
    return bool(names.intersection(argv))
