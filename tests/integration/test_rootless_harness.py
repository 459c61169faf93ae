"""The rootless harness itself (tests/rootless_user.py): what a world leaves running is found,
killed and reported, also a daemon that set its process title (which overwrites the memory
/proc/PID/environ shows, so the runtime dir is no longer in its environment there)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.rootless_user import VENV_BIN, take_leftovers

pytestmark = pytest.mark.rootless

# A detached daemon outside the world's PID namespace whose title names nothing of the session:
# only the session's cgroup knows it is the session's.
LEAK = ("import os, setproctitle, time\n"
        "if os.fork(): os._exit(0)\n"
        "os.setsid(); setproctitle.setproctitle('hy-leak')\n"
        "null = os.open(os.devnull, os.O_RDWR)\n"
        "for fd in (0, 1, 2): os.dup2(null, fd)\n"
        "time.sleep(300)\n")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_titled_burrow_dns_counts_as_the_worlds(rl: Any) -> None:
    rl.burrow("sandbox", "create", "a", check=True, timeout=60)
    left = rl.leftover_pids()
    dns = [p for p in left if _cmdline(p).startswith(b"burrow-dns")]
    assert len(dns) == 1, [_cmdline(p) for p in left]
    # Why the environment alone was not enough: the title took that memory.
    assert rl.runtime.encode() not in Path(f"/proc/{dns[0]}/environ").read_bytes()


def test_a_leftover_is_killed_and_named(rootless_user: Any) -> None:
    session = rootless_user.session()
    if session.cgroup is None:
        session.close()
        pytest.skip("environment: no writable cgroup v2 hierarchy for the session")
    try:
        res = session.run([str(VENV_BIN / "python"), "-c", LEAK], check=True)
        assert res.rc == 0
        leak = [p for p in session.leftover_pids() if _cmdline(p).startswith(b"hy-leak")]
        assert len(leak) == 1
    finally:
        described = session.close()
        recorded = take_leftovers()  # this test's own doing: not a failure of the test
    assert any("hy-leak" in d for d in described), described
    assert len(recorded) == 1 and "test_a_leftover_is_killed_and_named" in recorded[0], recorded
    assert not os.path.exists(session.cgroup)
    try:  # dead: gone, or a zombie of this machine's PID 1 (which does not reap)
        state = Path(f"/proc/{leak[0]}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z"), state
