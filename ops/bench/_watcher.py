"""A reader of node B in a process of its own, for ``cachet bench invalidation``.

The benchmark's process hosts node A (the service that revokes) and the
watermark ticker; timing B's answers from a thread there would add A's
threads' hold on that process's GIL to every sample. This process only
reads B: told a key and its old value, it reads the key until B stops
serving that value and says when, on ``time.monotonic()``. That clock is
CLOCK_MONOTONIC, one clock for every process of a Linux host, so the
benchmark compares it with its own reading taken just before the change.

Protocol, one JSON object per line. In, first: ``{"port", "token",
"contract", "poll_s"}``. Then per sample, in: ``{"key", "old_b64",
"timeout_s"}``; out: ``{"serving": bool}`` after the first read (the
benchmark changes the key only after it), then ``{"stopped_at": float}``,
or ``{"stopped_at": null}`` if B still served the value at the timeout.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from typing import Any

from cachet.ops.node_process import NodeHttp


def _say(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def main() -> int:
    setup = json.loads(sys.stdin.readline())
    node = NodeHttp(setup["port"], setup["token"], "B")
    contract, poll_s = setup["contract"], setup["poll_s"]

    def serves(key: str, old: bytes) -> bool:
        code, r = node.call("/v1/get", {"key": key, "contract": contract})
        if code != 200:
            raise SystemExit(f"watcher: node B refused a read of {key!r}: {code} {r}")
        return bool(r["hit"]) and base64.b64decode(r["value_b64"] or "") == old

    for line in sys.stdin:
        req = json.loads(line)
        key, old = req["key"], base64.b64decode(req["old_b64"])
        serving = serves(key, old)
        _say({"serving": serving})
        deadline = time.monotonic() + req["timeout_s"]
        stopped_at: float | None = None
        while serving:
            time.sleep(poll_s)
            serving = serves(key, old)
            now = time.monotonic()
            if not serving:
                stopped_at = now
            elif now > deadline:
                break
        _say({"stopped_at": stopped_at})
    node.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
