"""The live view's RocksDB store; it lives in :mod:`materializers.view`.

Kept so ``from materializers.view_store import ViewStore`` works too.
"""

from __future__ import annotations

from materializers.view import *  # noqa: F403
from materializers.view import __all__ as __all__
