"""CNI's error contract: `{"cniVersion", "code", "msg", "details"}` on stdout, non-zero exit."""

from __future__ import annotations

import json

# Well-known codes (CNI spec 1.0.0 "Error" section; 50/51 are 1.1's STATUS codes). 1-99 are
# reserved for the spec; plugin-specific failures use 100 and up.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
ENGINE_FAILURE = 100  # the engine refused or failed the request (its message says why)
CHECK_FAILED = 101  # CHECK found the container's networking not as ADD left it


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> str:
        out: dict[str, object] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return json.dumps(out)
