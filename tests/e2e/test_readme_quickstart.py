"""The README's quick start, followed literally by an unprivileged user on a fresh clone.

A new home directory for the harness user (tests/rootless_user.py) gets a `git clone` of this
checkout (its committed HEAD: the README the user reads is the clone's). Then, as that user, with
the PATH a Debian login shell gives (plus ~/.local/bin, as after `pipx ensurepath`):
- the quick start's first shell block, line by line as written, except the `sudo` lines (root's
  part: the suite's own install has done it); it must install with `pipx install .` and end with
  `burrow demo`, which must succeed;
- the quick start's "without pipx" command (`pip install .` into a venv), then the rootless
  section's shell block with that venv on PATH (its published port moved to a free one, and the
  `curl` given retries, since the server it reaches is started in the background just before).
The home directory, with pipx's and pip's venvs, is removed afterwards, and the burrow world is
torn down; no process may be left.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rootless_user import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.rootless]

# A Debian login shell's PATH for an ordinary user (no sbin), with ~/.local/bin first, as a new
# shell has it after `pipx ensurepath`.
USER_PATH = "{home}/.local/bin:/usr/local/bin:/usr/bin:/bin:/usr/games"
INSTALL_TIMEOUT = 480  # building burrow's wheel and fetching its dependencies; the rest is seconds


def section(readme: str, heading: str) -> str:
    start = readme.index(f"\n## {heading}")
    end = readme.find("\n## ", start + 1)
    return readme[start:end if end > 0 else None]


def sh_blocks(text: str) -> list[list[str]]:
    return [[ln for ln in b.splitlines() if ln.strip()]
            for b in re.findall(r"```sh\n(.*?)```", text, flags=re.S)]


@pytest.fixture
def fresh_home(rootless_user: Any) -> Iterator[Path]:
    """A new home for the test user holding a fresh clone of this checkout as ~/burrow."""
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("environment: the checkout is not a git repository, or git is missing")
    home = Path(tempfile.mkdtemp(prefix="burrow-quickstart-", dir="/tmp"))
    try:
        # Root clones (git refuses a repository owned by someone else to the user), then the
        # clone is handed over whole: from here on, only the user acts.
        subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(home / "burrow")],
                       check=True, capture_output=True, text=True, timeout=120)
        subprocess.run(["chown", "-R", f"{rootless_user.uid}:{rootless_user.gid}", str(home)], check=True)
        home.chmod(0o700)
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run_as_user(rl: Any, home: Path, script: str, path: str, timeout: float) -> subprocess.CompletedProcess[str]:
    user = rl.user
    env = {"HOME": str(home), "USER": user.name, "LOGNAME": user.name, "LANG": "C.UTF-8",
           "PATH": path, "XDG_RUNTIME_DIR": rl.runtime, "XDG_DATA_HOME": str(home / ".local/share")}
    argv = ["runuser", "-u", user.name, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
            "bash", "-c", f"set -euo pipefail\ncd ~/burrow\n{script}"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/")
    assert res.returncode == 0, f"rc {res.returncode}\n--- script\n{script}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_quick_start_with_pipx(rl: Any, fresh_home: Path) -> None:
    if shutil.which("pipx") is None:
        pytest.skip("environment: pipx is not installed (scripts/install --test installs it)")
    readme = (fresh_home / "burrow" / "README.md").read_text()
    block = sh_blocks(section(readme, "Quick start"))[0]
    user_lines = [ln for ln in block if not ln.lstrip().startswith("sudo ")]
    assert any(ln.startswith("pipx install .") for ln in user_lines), block
    assert user_lines[-1].startswith("burrow demo"), block
    entry_points = re.findall(r'^(burrow[\w-]*) = "', (fresh_home / "burrow" / "pyproject.toml").read_text(), re.M)
    assert "burrow-netavark" in entry_points and "burrow-dns" in entry_points
    script = "\n".join(user_lines) + f"\ncommand -v {' '.join(entry_points)}\n"
    res = run_as_user(rl, fresh_home, script, USER_PATH.format(home=fresh_home), INSTALL_TIMEOUT)
    assert "Usage" in res.stdout and "demo OK" in res.stdout, res.stdout
    # Every console script in pyproject.toml is on the user's PATH, from pipx's bin directory.
    on_path = res.stdout.strip().splitlines()[-len(entry_points):]
    assert on_path == [f"{fresh_home}/.local/bin/{name}" for name in entry_points]


@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_quick_start_with_pip_then_rootless_section(rl: Any, fresh_home: Path) -> None:
    readme = (fresh_home / "burrow" / "README.md").read_text()
    pip_cmds = re.findall(r"`(python3 -m venv (\S+) && \S+/pip install \.)`", section(readme, "Quick start"))
    assert pip_cmds, "the quick start no longer says how to install with pip into a venv"
    install, venv = pip_cmds[0]
    venv_bin = venv.replace("~", str(fresh_home)) + "/bin"
    run_as_user(rl, fresh_home, install, USER_PATH.format(home=fresh_home), INSTALL_TIMEOUT)

    block = sh_blocks(section(readme, "Rootless: the `burrow` CLI"))[0]
    port = free_port()
    lines = [ln.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for ln in block]
    lines = [re.sub(r"^curl ", "curl -sS --retry 30 --retry-all-errors --retry-delay 1 ", ln) for ln in lines]
    assert any(ln.startswith("curl ") for ln in lines) and lines[-1].startswith("burrow down"), block
    # Each command's output is framed so the test can find it.
    script = "\n".join(f"echo '>>> {i}'\n{ln}" for i, ln in enumerate(lines))
    res = run_as_user(rl, fresh_home, script, f"{venv_bin}:" + USER_PATH.format(home=fresh_home), 120)
    outputs = dict(re.findall(r">>> (\d+)\n(.*?)(?=>>> \d+\n|\Z)", res.stdout, flags=re.S))
    by_line = {lines[int(i)].split("#")[0].strip(): out for i, out in outputs.items()}
    assert re.search(r"^(10\.90\.0\.10|fd90:[0-9a-f:]+)\s+\S*backend", by_line["burrow exec cli -- getent hosts backend"], re.M), res.stdout
    curl_out = next(out for cmd, out in by_line.items() if cmd.startswith("curl "))
    assert "Directory listing" in curl_out, res.stdout
    status = json.loads(next(out for cmd, out in by_line.items() if cmd.startswith("burrow status")))
    assert status, res.stdout
    # `burrow down` took everything: nothing of this world runs any more.
    assert not rl.leftover_pids()
