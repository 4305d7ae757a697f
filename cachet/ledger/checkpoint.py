"""What the seal verifier must remember across restarts, as storable rows.

A verifier that forgets what it applied can be fed a genuine record again
after a restart (a replay), and one that re-reads every seal from offset 0
on each start raises false alarms and starts slower as the log grows. So
the verifying consumer's state is checkpointed *with the view it feeds*: the
view writes these rows in the same synced WriteBatch as its entries and
offsets, so after a crash at any point the checkpoint describes exactly the
events the view holds.

The state is small and bounded by what is still open, never by the log:

* per producer epoch, the chain head: the last verified seal's sequence and
  hash. Every seal at or below it is either *open* (below) or *closed*:
  each of its leaves on our topics was applied or declared missing. An
  event that names a closed seal is a replay and is refused.
* per open seal: the seal record itself (its leaf hashes check the events
  still to come) and the leaf indices still expected.
* per partition and producer: the last applied producer sequence (log order).

Rows (names under the view's ``m/`` meta prefix; values UTF-8 JSON)::

    verifier/chains                  {"<producer_id>": [seal_seq, "<seal hash hex>"], ...}
    verifier/order                   [["<topic>", partition, "<producer_id>", seq], ...]
    verifier/open/<producer_id>/<seal_seq>
                                     {"raw": "<seal record, base64>", "expected": [leaf, ...]}
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass

from cachet.errors import CachetError

__all__ = [
    "CHAINS_ROW",
    "OPEN_PREFIX",
    "ORDER_ROW",
    "CheckpointError",
    "OpenSealRow",
    "VerifierCheckpoint",
    "open_row_name",
]

CHAINS_ROW = "verifier/chains"
ORDER_ROW = "verifier/order"
OPEN_PREFIX = "verifier/open/"


class CheckpointError(CachetError):
    """A stored verifier checkpoint does not parse: the view must be rebuilt."""


def open_row_name(producer_id: str, seal_seq: int) -> str:
    return f"{OPEN_PREFIX}{producer_id}/{seal_seq}"


@dataclass(frozen=True, slots=True)
class OpenSealRow:
    """A verified seal whose leaves on our topics have not all arrived."""

    raw: bytes  # the seal record exactly as it is in the log
    expected: frozenset[int]

    def encode(self) -> bytes:
        return json.dumps(
            {"raw": base64.b64encode(self.raw).decode(), "expected": sorted(self.expected)}
        ).encode()

    @classmethod
    def decode(cls, name: str, value: bytes) -> OpenSealRow:
        try:
            obj = json.loads(value)
            expected = frozenset(int(i) for i in obj["expected"])
            return cls(base64.b64decode(obj["raw"], validate=True), expected)
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint row {name}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class VerifierCheckpoint:
    """The parsed rows: chain heads, log-order positions, open seals."""

    chains: Mapping[str, tuple[int, bytes]]
    order: Mapping[tuple[str, int, str], int]
    open_seals: Mapping[tuple[str, int], OpenSealRow]

    @classmethod
    def from_rows(cls, rows: Mapping[str, bytes]) -> VerifierCheckpoint:
        """Parse the rows a view stored (names without the meta prefix)."""
        chains: dict[str, tuple[int, bytes]] = {}
        order: dict[tuple[str, int, str], int] = {}
        open_seals: dict[tuple[str, int], OpenSealRow] = {}
        try:
            if CHAINS_ROW in rows:
                for pid, (seq, hash_hex) in json.loads(rows[CHAINS_ROW]).items():
                    chains[str(pid)] = (int(seq), bytes.fromhex(hash_hex))
            if ORDER_ROW in rows:
                for topic, partition, pid, seq in json.loads(rows[ORDER_ROW]):
                    order[(str(topic), int(partition), str(pid))] = int(seq)
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"verifier checkpoint: {exc}") from exc
        for name, value in rows.items():
            if not name.startswith(OPEN_PREFIX):
                continue
            pid, sep, seq = name[len(OPEN_PREFIX) :].rpartition("/")
            if not sep or not seq.isdigit():
                raise CheckpointError(f"checkpoint row {name}: not {OPEN_PREFIX}<producer>/<seq>")
            open_seals[(pid, int(seq))] = OpenSealRow.decode(name, value)
        return cls(chains, order, open_seals)


def encode_chains(chains: Mapping[str, tuple[int, bytes]]) -> bytes:
    return json.dumps({pid: [seq, h.hex()] for pid, (seq, h) in sorted(chains.items())}).encode()


def encode_order(order: Mapping[tuple[str, int, str], int]) -> bytes:
    return json.dumps([[t, p, pid, seq] for (t, p, pid), seq in sorted(order.items())]).encode()
