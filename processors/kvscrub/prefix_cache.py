"""The tenant-scoped prefix cache of a :class:`~cachet.processors.kvscrub.pool.BlockPool`.

Maps ``(tenant, content hash)`` to the block holding that content, with a
reverse index by block so that a block leaving circulation (release,
quarantine) drops every entry that points at it in one step.

Keys are scoped by tenant: a cross-tenant prefix hit would both leak data and
open a timing side channel on another tenant's prompts.

Not locked on its own: the owning pool calls it under its lock. Which blocks
may be published, and whether a hit may be served (reuse budget, TTL), is the
pool's decision; this module only keeps the two maps consistent.
"""

from __future__ import annotations

__all__ = ["PrefixCache", "PrefixKey"]

PrefixKey = tuple[str, bytes]
"""``(tenant, block content hash)``."""


class PrefixCache:
    """``(tenant, hash) -> block`` with a reverse index ``block -> keys``."""

    def __init__(self) -> None:
        self._entries: dict[PrefixKey, int] = {}
        self._by_block: dict[int, set[PrefixKey]] = {}

    def publish(self, tenant: str, block_hash: bytes, block_id: int) -> None:
        """Cache ``block_id`` under ``(tenant, block_hash)``, replacing any older entry."""
        key = (tenant, block_hash)
        old = self._entries.get(key)
        if old is not None:
            self._by_block.get(old, set()).discard(key)
        self._entries[key] = block_id
        self._by_block.setdefault(block_id, set()).add(key)

    def get(self, tenant: str, block_hash: bytes) -> int | None:
        """The block cached under ``(tenant, block_hash)``, if any (no policy check)."""
        return self._entries.get((tenant, block_hash))

    def drop_block(self, block_id: int) -> None:
        """Remove every entry that points at ``block_id``."""
        for key in self._by_block.pop(block_id, set()):
            if self._entries.get(key) == block_id:
                del self._entries[key]

    def snapshot(self) -> dict[PrefixKey, int]:
        """A copy of the entries ``(tenant, hash) -> block``."""
        return dict(self._entries)
