"""What is left of a destroyed data key."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KeyTombstone"]


@dataclass(frozen=True, slots=True)
class KeyTombstone:
    """A destroyed key's id, name, when and why. Never key material."""

    key_id: str
    name: str
    destroyed_at_us: int
    reason: str
