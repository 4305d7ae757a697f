"""The live view's own apply logic over a scratch RocksDB store.

A replay must reach the state a live node reaches, so it does not carry a
second copy of how events change the view: it drives a real
:class:`~cachet.materializers.live_view.LiveView` opened on a scratch
directory with no broker behind it (its Kafka clients are created but never
polled, and never connect), and hands it each verified event exactly as the
live verifying consumer would. The view's state hash is then the live one by
construction.

Everything this module needs from the live view that is not public API is
used here and only here (``_apply``, ``_batch``, ``_commit``): the one place
to change when the live view grows public hooks for applying a verified
event and committing extra rows with it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cachet.config import CachetConfig
from cachet.crypto.seal import KeySet
from cachet.ledger.verifier import Applied
from cachet.materializers import live_view
from cachet.materializers.live_view import LiveView
from cachet.materializers.replay.verified import VerifiedEvent
from cachet.materializers.view import ViewEntry, ViewStore
from cachet.schemas.events import EventType

__all__ = ["ScratchView"]

log = logging.getLogger(__name__)

# No broker: the scratch view's own consumer is never polled.
_NO_BROKER = ""


def _no_alert(event_type: EventType, payload: dict[str, Any]) -> None:
    # The scratch view's consumer never reads, so it never judges anything;
    # the replay reports its own refusals.
    log.debug("scratch view alert ignored: %s %s", event_type.value, payload)


class ScratchView:
    """A live view at ``path`` that the replay feeds verified events."""

    def __init__(self, path: Path, config: CachetConfig, anchor: KeySet) -> None:
        self.path = Path(path)
        self._view = LiveView.from_config(
            config, _NO_BROKER, anchor, self.path, alert=_no_alert, name="replay"
        )
        names = config.kafka.topic_names()
        # The topics a live view reads: the only events that change its state.
        self.view_topics = frozenset(names(t) for t in live_view.DATA_TOPICS)

    @property
    def store(self) -> ViewStore:
        return self._view.store

    def apply(self, verified: VerifiedEvent) -> bool:
        """Apply one verified event as the live view would; False when the live
        view does not read its topic (nothing changes)."""
        if verified.topic not in self.view_topics or verified.verified_seal is None:
            return False
        self._view.apply_verified(Applied(verified.event, verified.origin, verified.verified_seal))
        return True

    def current(self, key_hash: bytes) -> ViewEntry | None:
        """The key's entry as applied so far (uncommitted changes included)."""
        return self._view.uncommitted(key_hash)

    def commit(self, meta: Mapping[str, bytes | None]) -> None:
        """Commit what was applied, with ``meta`` rows (None deletes) in the
        same synced WriteBatch: after a crash the rows describe exactly the
        entries on disk."""
        self._view.commit_with(meta)

    def state_hash(self) -> bytes:
        return self.store.state_hash()

    def close(self) -> None:
        self._view.close()
