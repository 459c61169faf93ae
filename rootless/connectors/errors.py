"""Turn a connector's own error text into a burrow error that names the fix."""

from __future__ import annotations

from netns.errors import BurrowError

_HINTS = (
    ("/dev/net/tun", "Permission denied",
     "/dev/net/tun is not usable by this user; as root run `chmod 666 /dev/net/tun` "
     "(the distro default, also needed by rootless Podman)"),
    ("/dev/net/tun", "No such file",
     "/dev/net/tun is missing; as root run `modprobe tun` (or create it with "
     "`mknod /dev/net/tun c 10 200 && chmod 666 /dev/net/tun`)"),
    ("setns", "Operation not permitted",
     "the connector could not enter the namespace; this is a burrow bug or a kernel "
     "that forbids it (check `sysctl kernel.unprivileged_userns_clone`)"),
    ("Couldn't switch", "",
     "pasta could not enter the namespace (needs --userns); this is a burrow bug"),
    ("Address already in use", "",
     "the API socket path is taken; run `burrow down` and retry"),
)


def explain(kind: str, output: str, what: str = "start") -> BurrowError:
    text = " ".join(line.strip() for line in output.replace("\r", "").splitlines()
                    if line.strip() and "experimental" not in line and "syslog" not in line)
    for needle, also, hint in _HINTS:
        if needle in text and also in text:
            return BurrowError(f"{what} {kind}: {text}: {hint}")
    return BurrowError(f"{what} {kind}: {text or 'exited without a message'}")
