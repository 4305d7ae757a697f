"""What each role may do over HTTP (DESIGN: "Privacy and access").

* Owner: read values, write, revoke, confirm freshness, read history.
* Regulator: metadata, history and signature status of reads; never plaintext.
* Auditor: proofs against a value commitment (reads without the value,
  history with commitments and seal references); never plaintext.
* Data protection: request erasures and set or lift legal holds, nothing
  else (no reads, no writes).

The cache client enforces the plaintext rule again below this (a
non-owner's response never carries a value): this table decides what a
role may even ask.
"""

from __future__ import annotations

import enum

from cachet.config.enums import Role

__all__ = ["RIGHTS", "Action", "Forbidden", "check_right"]


class Action(enum.Enum):
    """A thing a request asks the node to do."""

    PUT = "put"
    GET = "get"
    REVOKE = "revoke"
    CONFIRM = "confirm"
    HISTORY = "history"
    ERASE = "erase"
    LEGAL_HOLD = "legal_hold"
    METRICS = "metrics"
    OPENAPI = "openapi"


_READ_METADATA = frozenset({Action.GET, Action.HISTORY, Action.METRICS, Action.OPENAPI})

RIGHTS: dict[Role, frozenset[Action]] = {
    Role.OWNER: _READ_METADATA | {Action.PUT, Action.REVOKE, Action.CONFIRM},
    Role.REGULATOR: _READ_METADATA,
    Role.AUDITOR: _READ_METADATA,
    Role.DATA_PROTECTION: frozenset({Action.ERASE, Action.LEGAL_HOLD, Action.OPENAPI}),
    # A role this build does not know grants nothing.
    Role.UNKNOWN: frozenset(),
}


class Forbidden(Exception):
    """A role asked for an action it has no right to (HTTP 403)."""

    def __init__(self, role: Role, action: Action, why: str = "") -> None:
        super().__init__(
            f"role {role.value!r} may not {action.value}"
            + (f": {why}" if why else f"; {_allowed(role)}")
        )
        self.role = role
        self.action = action


def _allowed(role: Role) -> str:
    actions = sorted(a.value for a in RIGHTS.get(role, frozenset()))
    return f"it may {', '.join(actions)}" if actions else "it may do nothing"


def check_right(role: Role, action: Action) -> None:
    """Raise :class:`Forbidden` unless ``role`` may do ``action``."""
    if action not in RIGHTS.get(role, frozenset()):
        raise Forbidden(role, action)
