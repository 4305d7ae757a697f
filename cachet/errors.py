"""The root of Cachet's typed errors.

Every package keeps its own small errors next to the code that raises them;
they all derive from :class:`CachetError` so a caller (the CLI, a consume
loop) can catch Cachet's failures without catching programming errors.
"""

from __future__ import annotations

__all__ = ["CachetError"]


class CachetError(Exception):
    """A failure Cachet can explain: the message names what was wrong."""
