"""Apply an nft JSON batch in-process through libnftables (what `nft -j -f -` does, minus the exec).

Each `nft` exec costs 10-15 ms here (a process start and the library's own start-up); the
library call is one netlink transaction in the caller's current netns. Used only when
libnftables.so.1 loads; otherwise the backend execs `nft` as before.
"""

from __future__ import annotations

import ctypes
import functools
from collections import OrderedDict
from collections.abc import Sequence

from netns.firewall.nfnl import netns_key
from netns.firewall.runner import ExecResult

NFT_CTX_OUTPUT_HANDLE = 1 << 3  # `nft -a`
NFT_CTX_OUTPUT_JSON = 1 << 4  # also makes nft_run_cmd_from_buffer parse JSON input
NFT_CTX_OUTPUT_ECHO = 1 << 5  # `nft -e`: what was added, with its handle
FLAGS = {"-a": NFT_CTX_OUTPUT_HANDLE, "-e": NFT_CTX_OUTPUT_ECHO}


class LibNftables:
    """A `Runner` for `nft -j -f -` that calls the library instead of exec'ing."""

    MAX_CONTEXTS = 4

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        # One context per netns, kept (see nfnl.Nfnl: closing a context's socket after a
        # delete waits ~13 ms for the kernel); a warm engine serves a few netns at most.
        self.ctxs: OrderedDict[tuple[int, int], int] = OrderedDict()
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int

    @classmethod
    @functools.cache
    def load(cls) -> LibNftables | None:
        """The library, loaded once per process (the warm engine keeps it)."""
        try:
            return cls(ctypes.CDLL("libnftables.so.1", use_errno=True))
        except (OSError, AttributeError):
            return None

    def __call__(self, argv: Sequence[str], stdin: str) -> ExecResult:
        opts = list(argv[1:-3])
        if list(argv[-3:]) != ["-j", "-f", "-"] or any(o not in FLAGS for o in opts):
            raise ValueError(f"LibNftables only runs `nft [-e] [-a] -j -f -`, not {list(argv)}")
        flags = NFT_CTX_OUTPUT_JSON
        for o in opts:
            flags |= FLAGS[o]
        ctx = self._ctx()
        if not ctx:
            return ExecResult(1, "", "libnftables: nft_ctx_new failed")
        self.lib.nft_ctx_output_set_flags(ctx, flags)
        rc = self.lib.nft_run_cmd_from_buffer(ctx, stdin.encode())
        # Reading a buffer also rewinds it for the next call.
        out = (self.lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        err = (self.lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
        return ExecResult(1 if rc else 0, out, err)

    def _ctx(self) -> int:
        """This netns's context (its netlink socket binds to the netns current at creation)."""
        key = netns_key()
        ctx = self.ctxs.pop(key, None)
        if ctx is None:
            ctx = self.lib.nft_ctx_new(0)
            if not ctx:
                return 0
            self.lib.nft_ctx_buffer_output(ctx)
            self.lib.nft_ctx_buffer_error(ctx)
        self.ctxs[key] = ctx
        while len(self.ctxs) > self.MAX_CONTEXTS:
            self.lib.nft_ctx_free(self.ctxs.popitem(last=False)[1])
        return int(ctx)
