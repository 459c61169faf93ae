"""The Netavark-compatible command line, as a pure function of (argv, stdin, env).

`run()` is what both the in-process path and the warm engine call, so the output contract lives
in one place: one JSON line on stdout; `{"error": ...}` on stdout with exit code 1; usage errors
as text on stderr with exit code 2; logs on stderr only when RUST_LOG or --log-level asks.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from netns import __version__, logs
from netns.errors import BurrowError, UsageError, error_json
from netns.schema import IPAddress, parse_ip

log = logging.getLogger("netns.cli")

USAGE = """\
usage: burrow-netavark [OPTIONS] <COMMAND>

Netavark-compatible container network setup (burrow engine).

Commands:
  setup <NETNS_PATH>      set up the networks in the JSON on stdin for a container netns
  teardown <NETNS_PATH>   remove what setup made for that container
  update <NETWORK> --network-dns-servers <IP>...
                          change a network's upstream DNS servers and reload DNS
  create                  complete a network definition (stdin: {network, used, options})
  firewall-reload         re-apply all firewall rules from <config>/firewall/
  firewalld-reload        stay running; re-apply them whenever firewalld reloads or restarts
  version                 print version information as JSON

Options:
  -f, --file <FILE>               read the JSON input from FILE instead of stdin
  -c, --config <DIR>              state directory (Podman: /run/containers/networks)
  -r, --rootless <true|false>     running inside a rootless user namespace
  -a, --aardvark-binary <PATH>    DNS server to start (default: burrow-dns, else aardvark-dns)
      --firewall-driver <NAME>    nftables (default), iptables, firewalld or none; env NETAVARK_FW
      --log-level <LEVEL>         error, warn, info, debug, trace; env RUST_LOG
      --plugin-directory <DIR>    accepted for compatibility; plugins are not supported
  -h, --help                      print this help
  -V, --version                   print the version
"""

PODMAN_AARDVARK = "/usr/lib/podman/aardvark-dns"


def default_dns_binary() -> str:
    """burrow-dns beside this interpreter (the venv's bin/), else Debian's aardvark-dns.

    Podman always names the binary (`--aardvark-binary=`); this is for direct use.
    """
    ours = os.path.join(os.path.dirname(sys.executable), "burrow-dns")
    return ours if os.access(ours, os.X_OK) else PODMAN_AARDVARK


@dataclass(frozen=True)
class Args:
    command: str
    file: str | None = None
    config: str | None = None
    rootless: bool = False
    aardvark_binary: str | None = None
    firewall_driver: str | None = None
    log_level: str | None = None
    netns_path: str | None = None
    network_name: str | None = None
    dns_servers: tuple[str, ...] = field(default=())


_VALUE_OPTS = {
    "-f": "file", "--file": "file",
    "-c": "config", "--config": "config",
    "-r": "rootless", "--rootless": "rootless",
    "-a": "aardvark_binary", "--aardvark-binary": "aardvark_binary",
    "--firewall-driver": "firewall_driver",
    "--log-level": "log_level",
    "--plugin-directory": "plugin_directory",
}  # fmt: skip

COMMANDS = ("setup", "teardown", "update", "create", "firewall-reload", "firewalld-reload", "version")


def _split_argv(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Global options (before the subcommand) and the subcommand with its own arguments."""
    opts: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if rest:  # options after the subcommand belong to it
            rest.append(word)
        elif word in ("-h", "--help"):
            raise UsageError(USAGE, exit_code=0)
        elif word in ("-V", "--version"):
            raise UsageError(f"netavark {__version__} (burrow)", exit_code=0)
        elif word.startswith("--") and "=" in word:
            key, value = word.split("=", 1)
            if key not in _VALUE_OPTS:
                raise UsageError(f"error: unexpected argument '{key}'\n\n{USAGE}")
            opts[_VALUE_OPTS[key]] = value
        elif word in _VALUE_OPTS:
            if i + 1 >= len(argv):
                raise UsageError(f"error: a value is required for '{word}'\n\n{USAGE}")
            opts[_VALUE_OPTS[word]] = argv[i + 1]
            i += 1
        elif word.startswith("-"):
            raise UsageError(f"error: unexpected argument '{word}'\n\n{USAGE}")
        else:
            rest.append(word)
        i += 1
    return opts, rest


def _update_args(cmd_args: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """`update <NETWORK> --network-dns-servers A B` or `...=A,B`."""
    if not cmd_args or cmd_args[0].startswith("-"):
        raise UsageError(f"error: update needs <NETWORK_NAME>\n\n{USAGE}")
    tail = cmd_args[1:]
    if not tail or tail[0].split("=", 1)[0] != "--network-dns-servers":
        raise UsageError(f"error: update needs --network-dns-servers\n\n{USAGE}")
    servers: list[str] = []
    if "=" in tail[0]:
        servers.append(tail[0].split("=", 1)[1])
    servers.extend(tail[1:])
    return cmd_args[0], tuple(s for item in servers for s in item.split(",") if s)


def parse_args(argv: Sequence[str]) -> Args:
    """Parse argv exactly as Podman writes it (`--rootless=false`, `--config DIR`)."""
    opts, rest = _split_argv(argv)
    if not rest:
        raise UsageError(f"error: a subcommand is required\n\n{USAGE}")
    command, *cmd_args = rest
    if command not in COMMANDS:
        raise UsageError(f"error: unrecognized subcommand '{command}'\n\n{USAGE}")
    rootless_text = opts.get("rootless", "false").lower()
    if rootless_text not in ("true", "false"):
        raise UsageError(
            f"error: invalid value '{opts['rootless']}' for '--rootless': use true or false"
        )
    netns_path = network_name = None
    dns_servers: tuple[str, ...] = ()
    if command in ("setup", "teardown"):
        if len(cmd_args) != 1 or not cmd_args[0]:
            raise UsageError(f"error: {command} needs exactly one <NETNS_PATH>\n\n{USAGE}")
        netns_path = cmd_args[0]
    elif command == "update":
        network_name, dns_servers = _update_args(cmd_args)
    elif cmd_args:
        raise UsageError(f"error: unexpected argument '{cmd_args[0]}' for {command}\n\n{USAGE}")
    return Args(
        command=command,
        file=opts.get("file"),
        config=opts.get("config"),
        rootless=rootless_text == "true",
        aardvark_binary=opts.get("aardvark_binary"),
        firewall_driver=opts.get("firewall_driver"),
        log_level=opts.get("log_level"),
        netns_path=netns_path,
        network_name=network_name,
        dns_servers=dns_servers,
    )


def _read_input(args: Args, stdin: bytes) -> bytes:
    if args.file:
        try:
            return Path(args.file).read_bytes()
        except OSError as exc:
            raise BurrowError(
                f"failed to load network options: IO error: {exc.strerror} (os error {exc.errno})"
            ) from None
    return stdin


def version_json() -> str:
    return json.dumps(
        {
            "version": __version__,
            "commit": "",
            "build_time": "",
            "target": f"python-{sys.version_info.major}.{sys.version_info.minor}-burrow",
        },
        indent=2,
    )


def run(argv: Sequence[str], stdin: bytes, env: Mapping[str, str]) -> tuple[str, str, int]:
    """Run one Netavark command. Returns (stdout, stderr, exit code); never raises."""
    err = io.StringIO()
    try:
        args = parse_args(argv)
    except UsageError as exc:
        if exc.exit_code == 0:
            return exc.message + "\n", "", 0
        return "", exc.message + "\n", exc.exit_code
    # Per request, not per process: the warm engine serves many requests with one logger.
    with logs.request_scope(err, logs.parse_level(args.log_level or env.get("RUST_LOG"))):
        try:
            out = _dispatch(args, stdin, env)
        except BurrowError as exc:
            return error_json(exc) + "\n", err.getvalue(), exc.exit_code
        except Exception as exc:  # a bug must still honour the output contract
            log.exception("internal error")
            return error_json(BurrowError(f"internal error: {exc!r}")) + "\n", err.getvalue(), 1
    return out, err.getvalue(), 0


def _dns_servers(texts: Sequence[str]) -> tuple[IPAddress, ...]:
    return tuple(parse_ip(s, "DNS server") for s in texts)


def _dispatch(args: Args, stdin: bytes, env: Mapping[str, str]) -> str:
    """Wire format in, one typed engine call, wire format out."""
    if args.command == "version":
        return version_json() + "\n"
    # Imported late: version and usage errors must stay cheap.
    from netns import engine
    from netns.schema import CreateRequest, NetworkOptions, dump_status

    ctx = engine.Context.build(
        config=args.config,
        rootless=args.rootless,
        aardvark_binary=args.aardvark_binary or default_dns_binary(),
        firewall_driver=args.firewall_driver,
        env=env,
    )
    if args.command == "setup":
        assert args.netns_path is not None
        # The namespace first, as before: a bad path is reported whatever the input holds.
        with engine.netns_fd(args.netns_path) as fd:
            options = NetworkOptions.loads(_read_input(args, stdin))
            return dump_status(engine.setup(ctx, options, fd)) + "\n"
    if args.command == "teardown":
        assert args.netns_path is not None
        engine.teardown(ctx, NetworkOptions.loads(_read_input(args, stdin)), args.netns_path)
        return ""
    if args.command == "update":
        assert args.network_name is not None
        engine.update(ctx, args.network_name, _dns_servers(args.dns_servers))
        return ""
    if args.command == "create":
        network = engine.create(CreateRequest.loads(_read_input(args, stdin)))
        return json.dumps(network.to_json(), separators=(",", ":")) + "\n"
    if args.command == "firewall-reload":
        ctx.firewall.reload()
        return ""
    if args.command == "firewalld-reload":  # a daemon: main() runs it, never a request
        raise BurrowError("firewalld-reload runs as its own process, not as an engine request")
    raise UsageError(f"unknown command {args.command}")


def main(argv: Sequence[str] | None = None) -> int:
    """In-process entry point: `burrow netavark ...` and the client's fallback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(argv)
        if args.command == "firewalld-reload":
            from netns.firewalld.reload import main as firewalld_reload

            return firewalld_reload(args.config, args.firewall_driver, args.log_level, os.environ)
        needs_stdin = args.command in ("setup", "teardown", "create") and not args.file
    except UsageError:
        needs_stdin = False
    stdin = sys.stdin.buffer.read() if needs_stdin else b""
    out, err, code = run(argv, stdin, os.environ)
    if err:
        sys.stderr.write(err)
    if out:
        sys.stdout.write(out)
        sys.stdout.flush()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
