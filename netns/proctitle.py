"""Process titles that say what each burrow process is, so `ps` and `pgrep -f` find them.

A forked DNS server or forwarder would otherwise show the command line of whatever forked it
(`burrow-netavark ... setup <netns>`), which looks like a hung setup.
"""

from __future__ import annotations


def set_title(title: str) -> None:
    """Set the whole command line (`ps -f`, `pgrep -f`) and the 15-byte comm (`ps`, `pgrep`)."""
    try:
        import setproctitle
    except ImportError:  # the stdlib-only paths still get comm below
        pass
    else:
        setproctitle.setproctitle(title)
    comm = title.split(" ", 1)[0].encode()[:15]
    try:  # prctl(PR_SET_NAME) without ctypes (its import is ~2 ms of a helper's start-up)
        with open("/proc/thread-self/comm", "wb") as f:
            f.write(comm)
    except OSError:
        pass
