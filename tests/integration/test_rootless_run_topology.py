"""`burrow run` and `burrow up -f` / `down -f`, as the unprivileged user: exit codes, stdin and a
terminal passed through, --rm on exit, Ctrl-C and SIGTERM; the example topology brought up,
names resolving across its networks, its port answering, a second `up` changing nothing, and
`down -f` leaving nothing; a failed or invalid `up` leaving nothing either."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pexpect
import pytest

from tests.rootless_user import REPO

pytestmark = pytest.mark.rootless
EXAMPLE = REPO / "examples" / "topology.toml"


@pytest.fixture(autouse=True)
def _connector() -> None:
    if shutil.which("slirp4netns") is None and shutil.which("pasta") is None:
        pytest.skip("environment: neither slirp4netns nor pasta is installed")


def sandboxes(rl: Any) -> list[str]:
    return sorted(r["name"] for r in json.loads(rl.burrow("sandbox", "ls", "--format", "json",
                                                          check=True).out))


def networks(rl: Any) -> list[str]:
    return sorted(r["name"] for r in json.loads(rl.burrow("network", "ls", "--format", "json",
                                                          check=True).out))


def test_run_passes_exit_code_and_stdin_and_rm_removes(rl: Any) -> None:
    res = rl.burrow("run", "--rm", "bcst1", "--", "sh", "-c", "exit 7")
    assert res.rc == 7, res
    res = rl.burrow("run", "--rm", "bcst2", "--", "sh", "-c", "read x; echo got $x; hostname -I",
                    input="hello\n")
    assert res.rc == 0 and "got hello" in res.out, res
    assert sandboxes(rl) == []
    assert rl.leftover_pids() == []  # the last sandbox went: so did the namespace
    # Without --rm the sandbox stays, as a container does.
    assert rl.burrow("run", "bcst3", "--", "true").rc == 0
    assert sandboxes(rl) == ["bcst3"]
    res = rl.burrow("run", "--rm", "bcst4", "--", "no-such-command")
    assert res.rc == 127 and sandboxes(rl) == ["bcst3"], res
    res = rl.burrow("run", "--rm", "bcst3", "--", "true")  # the name is taken: burrow's error
    assert res.rc == 125 and "bcst3" in res.err, res


def _spawn(rl: Any, *args: str) -> pexpect.spawn:
    argv = rl.argv([str(REPO / ".venv" / "bin" / "burrow"), *args])
    return pexpect.spawn(argv[0], argv[1:], cwd="/", timeout=60, encoding="utf-8")


def test_run_with_a_terminal_and_ctrl_c(rl: Any) -> None:
    child = _spawn(rl, "run", "--rm", "bcsttty", "--", "sh", "-c",
                   "test -t 0 && test -t 1 && echo TTY-OK; read line; echo ECHO-$line")
    child.expect("TTY-OK")
    child.sendline("abc")
    child.expect("ECHO-abc")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    # Ctrl-C at the terminal: the command gets SIGINT, burrow waits, removes, exits 130.
    child = _spawn(rl, "run", "--rm", "bcstint", "--", "sh", "-c", "echo READY; exec sleep 60")
    child.expect("READY")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130, (child.exitstatus, child.signalstatus, child.before)
    assert sandboxes(rl) == []


def test_run_sigterm_to_burrow_stops_the_command_and_removes(rl: Any) -> None:
    argv = [str(REPO / ".venv" / "bin" / "burrow"), "run", "--rm", "bcstterm", "--", "sh", "-c",
            "echo READY; exec sleep 60"]
    proc = rl.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    # runuser's child is burrow itself; a CI runner would signal burrow.
    burrow_pid = next(p for p in _children(proc.pid))
    os.kill(burrow_pid, signal.SIGTERM)
    rc = proc.wait(timeout=60)
    assert rc == 143, proc.stderr.read() if proc.stderr else rc
    assert sandboxes(rl) == []
    assert rl.leftover_pids() == []


def test_run_sigterm_while_the_sandbox_is_made_leaves_nothing(rl: Any) -> None:
    """SIGTERM to `burrow run --rm` after the world came up, while the sandbox is being made
    (its record names its netns: the engine's setup and the ports come next): 143, and neither
    the sandbox nor the world this run started is left (the world stayed up before)."""
    argv = [str(REPO / ".venv" / "bin" / "burrow"), "run", "--rm", "bcstmk", "--", "sh", "-c",
            "echo READY; exec sleep 60"]
    record = Path(rl.runtime) / "burrow" / "sandboxes" / "bcstmk.json"
    proc = rl.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not _names_netns(record) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    burrow_pid = next(p for p in _children(proc.pid))
    os.kill(burrow_pid, signal.SIGTERM)
    rc = proc.wait(timeout=60)
    out, err = proc.communicate()
    assert rc == 143 and "READY" not in out, (rc, out, err)
    assert sandboxes(rl) == []
    assert rl.leftover_pids() == []


def _names_netns(record: Path) -> bool:
    try:
        return bool(json.loads(record.read_text()).get("netns"))
    except (OSError, ValueError):
        return False


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _example(rl: Any, port: int) -> Path:
    """The example file, readable by the user, its published port moved to a free one."""
    f = Path(rl.runtime) / "topology.toml"
    f.write_text(EXAMPLE.read_text().replace("127.0.0.1:18097:", f"127.0.0.1:{port}:"))
    f.chmod(0o644)
    return f


def _http(rl: Any, box: str, url: str) -> str:
    code = (f"import time, urllib.request\nfor i in range(60):\n try:\n"
            f"  print(urllib.request.urlopen({url!r}, timeout=2).status); break\n"
            f" except OSError as e:\n  err = e; time.sleep(0.5)\nelse:\n print(err)")
    return str(rl.burrow("exec", box, "--", "python3", "-c", code, check=True).out.strip())


def test_example_topology_up_twice_resolves_answers_and_down_leaves_nothing(rl: Any) -> None:
    port = _free_port()
    f = _example(rl, port)
    res = rl.burrow("up", "-f", str(f), timeout=180, check=True)
    assert "created network front" in res.out and "created sandbox db" in res.out, res.out
    again = rl.burrow("up", "-f", str(f), check=True)
    assert again.out.startswith("nothing to change: 5 object(s)"), again.out
    assert sandboxes(rl) == ["api", "db", "web"] and networks(rl) == ["back", "front"]
    # Names across the declared networks: web -> api by its alias on front; api -> db on back;
    # web is not on back, so db is not its name to resolve.
    assert "10.97.0." in rl.burrow("exec", "web", "--", "getent", "ahostsv4", "backend",
                                   check=True).out
    assert "10.98.0.2" in rl.burrow("exec", "api", "--", "getent", "hosts", "db", check=True).out
    assert rl.burrow("exec", "web", "--", "getent", "hosts", "db").rc != 0
    assert _http(rl, "web", "http://backend:9000/") == "200"
    assert _http(rl, "api", "http://db:5432/") == "200"
    # The declared port answers on the host.
    body = b""
    for _ in range(60):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                body = s.recv(100)
            break
        except OSError:
            time.sleep(0.5)
    assert body.startswith(b"HTTP/1.0 200"), body
    res = rl.burrow("down", "-f", str(f), check=True)
    assert "no sandbox left: namespace stopped" in res.out, res.out
    assert sandboxes(rl) == [] and networks(rl) == []
    assert rl.leftover_pids() == []
    assert "nothing to remove" in rl.burrow("down", "-f", str(f), check=True).out


def test_invalid_or_failing_up_leaves_nothing_and_down_cleans_a_partial_one(rl: Any) -> None:
    port = _free_port()
    f = _example(rl, port)
    bad = Path(rl.runtime) / "bad.toml"
    bad.write_text(f.read_text() + "\n[sandboxes.late]\nports = ['99999:80']\n")
    bad.chmod(0o644)
    res = rl.burrow("up", "-f", str(bad))
    assert res.rc == 1 and f"{bad}: [sandboxes.late] ports:" in res.err, res
    assert networks(rl) == [] and sandboxes(rl) == []
    # A failure half-way (the host port is taken): what this `up` made is removed again.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        res = rl.burrow("up", "-f", str(f), timeout=180)
        assert res.rc != 0 and str(port) in res.err, res
    assert networks(rl) == [] and sandboxes(rl) == []
    # Made by hand, part of the file: down -f removes what exists of it and says what.
    rl.burrow("network", "create", "front", "--subnet", "10.97.0.0/24", check=True)
    rl.burrow("sandbox", "create", "web", "--network", "front", check=True)
    res = rl.burrow("down", "-f", str(f), check=True)
    assert "removed sandbox web" in res.out and "removed network front" in res.out, res.out
    assert networks(rl) == [] and sandboxes(rl) == [] and rl.leftover_pids() == []


def test_up_again_after_the_namespace_died_brings_everything_back(rl: Any) -> None:
    f = _example(rl, _free_port())
    rl.burrow("up", "-f", str(f), timeout=180, check=True)
    st = json.loads(rl.burrow("status", "--format", "json", check=True).out)
    os.kill(st["namespace"]["holder_pid"], signal.SIGKILL)  # what a crash (or OOM) does
    for _ in range(100):
        if rl.burrow("status").rc == 1:
            break
        time.sleep(0.1)
    res = rl.burrow("up", "-f", str(f), timeout=180, check=True)
    assert "started" in res.out and "unchanged: sandbox db" in res.out, res.out
    assert _http(rl, "api", "http://db:5432/") == "200"
    rl.burrow("down", "-f", str(f), check=True)
    assert rl.leftover_pids() == []


def test_the_readme_commands_work_as_written(rl: Any) -> None:
    """The README's `burrow run` / `up -f` / `down -f` lines, run as written from the clone
    (the one that needs a network `web` and serves forever is left out)."""
    readme = (REPO / "README.md").read_text()
    start = readme.index("\n## One command, or a test bed")
    block = readme[start:].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [ln.split("  #")[0].strip() for ln in block.splitlines() if ln.strip()]
    run = next(ln for ln in lines if ln.startswith("burrow run --rm job"))
    res = rl.run(["sh", "-c", run], check=True)
    assert res.out.strip() == "hello from a sandbox", res
    for ln in (x for x in lines if x.startswith(("burrow up -f", "burrow down -f"))):
        rl.run(["sh", "-c", f"cd {REPO} && {ln}"], timeout=180, check=True)
    # The default network `burrow` that `run` made stays, as Podman's `podman` network does.
    assert sandboxes(rl) == [] and networks(rl) == ["burrow"] and rl.leftover_pids() == []
