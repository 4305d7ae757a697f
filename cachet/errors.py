"""The root of Cachet's typed errors.

Every package keeps its own small errors next to the code that raises them;
they all derive from :class:`CachetError` so a caller (the CLI, a consume
loop) can catch Cachet's failures without catching programming errors.
"""

from __future__ import annotations

__all__ = ["CachetError", "StateFailure"]


class CachetError(Exception):
    """A failure Cachet can explain: the message names what was wrong."""


class StateFailure(CachetError):
    """A component's own durable state failed (its database), not the input
    it was handling: a consume loop never dead-letters the record for it,
    it stops instead and lets the component say why."""
