"""``cachet view``: look at a node's live view on disk (the node stopped).

``cachet view state-hash DIR`` prints the view's state hash: equal on every
node that applied the same log, and equal to a view rebuilt from offset 0.
A running node reports the same hash in its ``/health`` JSON
(``state_hash``), so an operator can compare nodes without stopping them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cachet.errors import CachetError


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("view", parents=[parent], help="inspect a node's live view on disk")
    vsub = p.add_subparsers(dest="view_command", metavar="ACTION", required=True)
    h = vsub.add_parser(
        "state-hash",
        parents=[parent],
        help="print the state hash of a stopped node's view",
        description="Print the state hash of a live view directory (the node must be "
        "stopped: RocksDB allows one process). Equal views have equal hashes.",
    )
    h.add_argument("path", type=Path, help="the view directory (DATA_DIR/view-NODE_ID)")
    h.add_argument("--json", action="store_true", help="print a JSON object")
    h.set_defaults(handler=state_hash)


def state_hash(args: argparse.Namespace) -> int:
    from cachet.materializers.view import ViewStore
    from cachet.materializers.view.errors import ViewMissingError

    try:
        with ViewStore.open(args.path, create=False) as store:
            digest = store.state_hash().hex()
            offsets = {f"{t}[{p}]": o for (t, p), o in sorted(store.offsets().items())}
    except ViewMissingError as exc:
        raise CachetError(f"{args.path}: no live view there ({exc})") from exc
    if args.json:
        print(json.dumps({"path": str(args.path), "state_hash": digest, "offsets": offsets}))
    else:
        print(digest)
    return 0
