"""`burrow-cni`, the executable a CNI runtime execs: a thin client in front of the warm engine.

Why: a runtime execs the plugin once per ADD and DEL, so start-up is on every container's
critical path, and importing the plugin's logic and the engine costs far more than the work.
Like `burrow-netavark` (`netns.client`, whose socket functions this reuses), this module imports
only the stdlib basics (and json), and hands the whole CNI call (environment and stdin) to the
warm engine of the config's `stateDir`, which runs `netns.cni.plugin.run` and returns the reply.
The engine is started on demand; whenever it does not serve the call, the call runs here,
in-process: slower, never wrong. VERSION, CHECK, GC and STATUS always run in-process.

If the engine died after receiving an ADD, the ADD may be half applied: the client runs DEL
of the same request first (DEL is idempotent and works on partial state), then the ADD.
"""

from __future__ import annotations

import os
import sys

from netns import client

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

ARGV = ["burrow-cni"]  # what the engine's run_command recognises as a CNI call
DEFAULT_STATE_DIR = "/run/burrow-cni"  # as netns.cni.config.DEFAULT_STATE_DIR (a unit test checks)
ENGINE_VERBS = ("ADD", "DEL")


def load_object(stdin: bytes) -> object:
    """`json.loads(stdin)`, or None where that raises (the in-process run reports it)."""
    from netns.jsonscan import NotJson, loads

    try:
        return loads(stdin)
    except NotJson:
        return None


def state_dir(stdin: bytes) -> str | None:
    conf = load_object(stdin)
    if not isinstance(conf, dict):
        return None
    value = conf.get("stateDir", DEFAULT_STATE_DIR)
    return value if isinstance(value, str) and value.startswith("/") else None


def via_engine(env: Mapping[str, str], stdin: bytes) -> tuple[client.Reply | None, str, bool]:
    """(reply, "", False) if the engine served it; else (None, why not, whether it may have run)."""
    sdir = state_dir(stdin)
    if sdir is None:
        return None, "no-state-dir", False
    try:
        path = client.socket_path(sdir, env)
        os.makedirs(sdir, mode=0o700, exist_ok=True)
    except OSError as exc:
        return None, f"state-dir ({exc.strerror})", False
    try:
        return client.request_engine(path, ARGV, stdin, None), "", False
    except client.Fallback as fb:
        reason = fb.reason
        if fb.spawn:
            try:
                client.spawn_engine(path)
                reason = "spawned"
            except OSError as exc:
                reason = f"spawn-failed ({exc})"
        return None, reason, fb.maybe_ran


def in_process(env: Mapping[str, str], stdin: bytes) -> tuple[str, int]:
    if sys.flags.no_site:
        import site  # the fast wrapper runs `python -S`; the engine's dependencies need site

        site.main()
    from netns.cni import plugin

    return plugin.run(env, stdin)


def main() -> int:
    env = dict(os.environ)
    stdin = b""
    if sys.stdin is not None and not sys.stdin.isatty():
        stdin = sys.stdin.buffer.read((1 << 20) + 1)
    reply, reason, maybe_ran = None, "verb", False
    if env.get("BURROW_ENGINE") == "off":
        reason = "off"
    elif env.get("CNI_COMMAND") in ENGINE_VERBS:
        reply, reason, maybe_ran = via_engine(env, stdin)
    if reply is not None:
        out, err, code, by = reply.stdout, reply.stderr, reply.code, "engine"
    else:
        if maybe_ran and env.get("CNI_COMMAND") == "ADD":
            in_process({**env, "CNI_COMMAND": "DEL"}, stdin)
        text, code = in_process(env, stdin)
        out, err, by = (text + "\n" if text else "").encode(), b"", f"in-process reason={reason}"
    if env.get("BURROW_ENGINE_STATS"):
        err += f"burrow-cni: served-by={by}\n".encode()
    client.emit(out, err)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
