"""Kill a process when the namespace holder dies (for connectors that have no --exit-fd).

    python -m rootless.connectors.tether HOLDER_PID TARGET_PID

Waits on pidfds of both; exits when either goes, SIGTERMing the target if the holder went.
"""

from __future__ import annotations

import os
import select
import signal
import sys


def main(argv: list[str]) -> int:
    holder, target = int(argv[0]), int(argv[1])
    try:
        hfd = os.pidfd_open(holder)
        tfd = os.pidfd_open(target)
    except ProcessLookupError:
        try:
            os.kill(target, signal.SIGTERM)
        except ProcessLookupError:
            pass
        return 0
    poller = select.poll()
    poller.register(hfd, select.POLLIN)
    poller.register(tfd, select.POLLIN)
    while True:
        events = dict(poller.poll())
        if tfd in events:
            return 0
        if hfd in events:
            signal.pidfd_send_signal(tfd, signal.SIGTERM)
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
