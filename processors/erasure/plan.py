"""What one erasure stage does to a subject's entries: a pure function.

:func:`plan_erasure` groups a subject's entries by (namespace, contract) --
the unit a data key covers (:func:`~cachet.producers.data_keys.data_key_name`)
-- and decides for each group, at a given time, whether it is **erased now**
(every ACTIVE version revoked, the group's data key destroyed) or **held**,
and why:

* a **legal hold** covers the group (a hold on the subject, on the
  namespace, or on both): held until the hold is lifted (``held_until_us``
  None), whatever the retention;
* else a **retention obligation** of the group's contract has not ended for
  some version of it: held until the latest ``written_at + retention`` of the
  group (the key encrypts every version of the group, so it can go only when
  the last obligation ended).

A group is erased or held as a whole: destroying its key erases every
version under it, so no version of a held group may lose its key, and
revoking part of a group would serve nobody. Entries written after the
request (``written_at_us > requested_at_us``) are not part of it.

No clock, no I/O: the processor passes ``now_us``; tests pass any.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from cachet.config import ContractConfig
from cachet.crypto.identifiers import same_identifier
from cachet.crypto.vault import name_of
from cachet.materializers.view import EntryState, ViewEntry
from cachet.producers.data_keys import data_key_name
from cachet.schemas.payloads import HeldEntry

__all__ = ["ErasurePlan", "GroupPlan", "HoldCause", "LegalHold", "plan_erasure"]


class HoldCause(enum.Enum):
    """Why a group is not erased now."""

    LEGAL_HOLD = "legal_hold"  # until a hold is lifted
    RETENTION = "retention"  # until the contract's retention obligation ends


@dataclass(frozen=True, slots=True)
class LegalHold:
    """An active legal hold: on a subject, a namespace, or a subject within a
    namespace (at least one of them is set)."""

    hold_id: str
    subject_hash: bytes | None
    namespace: str | None
    reason: str

    def covers(self, subject_hash: bytes, namespace: str) -> bool:
        """Whether this hold covers the subject's entries in ``namespace``."""
        if self.subject_hash is None and self.namespace is None:
            return False  # a hold on nothing in particular holds nothing
        if self.subject_hash is not None and not same_identifier(self.subject_hash, subject_hash):
            return False
        return self.namespace is None or self.namespace == namespace


@dataclass(frozen=True, slots=True)
class GroupPlan:
    """One (namespace, contract) group of the subject's entries and its fate.

    ``entries`` are the current versions of the group's keys (any state).
    When ``held_by`` is None the group is erased: ``to_revoke`` are its
    ACTIVE entries and ``key_name`` is destroyed. ``foreign_key_ids`` are key
    ids of entries that are not under the subject's key of the group (written
    before per-subject keys): never destroyed here (they may encrypt other
    subjects' values), reported as failures.
    """

    namespace: str
    contract: str
    key_name: str
    entries: tuple[ViewEntry, ...]
    held_by: HoldCause | None = None
    ground: str = ""
    held_until_us: int | None = None
    foreign_key_ids: tuple[str, ...] = ()

    @property
    def erased(self) -> bool:
        return self.held_by is None

    @property
    def to_revoke(self) -> tuple[ViewEntry, ...]:
        """The ACTIVE entries to revoke (none while held)."""
        if not self.erased:
            return ()
        return tuple(e for e in self.entries if e.state is EntryState.ACTIVE)

    def held_entries(self) -> tuple[HeldEntry, ...]:
        """What ErasureCompleted.held says of this group (empty when erased)."""
        if self.erased:
            return ()
        return tuple(
            HeldEntry(
                key_hash=e.key_hash,
                namespace=self.namespace,
                contract=self.contract,
                ground=self.ground,
                held_until_us=self.held_until_us,
            )
            for e in self.entries
        )


@dataclass(frozen=True, slots=True)
class ErasurePlan:
    """Every group of the subject's entries in scope, erased or held."""

    groups: tuple[GroupPlan, ...]
    # Contracts of entries in scope that this processor does not know: no
    # retention obligation can be known for them (they are erased).
    unknown_contracts: tuple[str, ...] = ()

    @property
    def erased(self) -> tuple[GroupPlan, ...]:
        return tuple(g for g in self.groups if g.erased)

    @property
    def held(self) -> tuple[GroupPlan, ...]:
        return tuple(g for g in self.groups if not g.erased)

    @property
    def held_entries(self) -> tuple[HeldEntry, ...]:
        return tuple(h for g in self.groups for h in g.held_entries())


def plan_erasure(
    subject_hash: bytes,
    entries: Iterable[ViewEntry],
    contracts: Mapping[str, ContractConfig],
    holds: Iterable[LegalHold],
    *,
    now_us: int,
    requested_at_us: int,
    namespace: str | None = None,
    only_groups: Collection[tuple[str, str]] | None = None,
) -> ErasurePlan:
    """Decide, at ``now_us``, what an erasure of ``subject_hash`` does.

    ``entries``: the subject's entries (the view's ``subject_entries``).
    ``namespace``: the request's namespace filter (None: every namespace).
    ``only_groups``: the (namespace, contract) groups a follow-up stage acts
    on (those the previous stage held); None for the request itself.
    """
    groups: dict[tuple[str, str], list[ViewEntry]] = {}
    for entry in entries:
        if (
            not same_identifier(entry.subject_hash, subject_hash)
            or entry.written_at_us > requested_at_us
        ):
            continue
        if namespace is not None and entry.namespace != namespace:
            continue
        ident = (entry.namespace, entry.contract)
        if only_groups is not None and ident not in only_groups:
            continue
        groups.setdefault(ident, []).append(entry)
    active_holds = list(holds)
    unknown: set[str] = set()
    planned = []
    for (ns, contract_name), members in sorted(groups.items()):
        members.sort(key=lambda e: e.key_hash)
        contract = contracts.get(contract_name)
        if contract is None:
            unknown.add(contract_name)
        planned.append(
            _plan_group(
                subject_hash, ns, contract_name, tuple(members), contract, active_holds, now_us
            )
        )
    return ErasurePlan(tuple(planned), tuple(sorted(unknown)))


def _plan_group(
    subject_hash: bytes,
    namespace: str,
    contract_name: str,
    entries: tuple[ViewEntry, ...],
    contract: ContractConfig | None,
    holds: list[LegalHold],
    now_us: int,
) -> GroupPlan:
    key_name = data_key_name(namespace, contract_name, subject_hash)
    foreign = tuple(sorted({e.data_key_id for e in entries if name_of(e.data_key_id) != key_name}))
    base = GroupPlan(namespace, contract_name, key_name, entries, foreign_key_ids=foreign)
    covering = sorted(
        (h for h in holds if h.covers(subject_hash, namespace)), key=lambda h: h.hold_id
    )
    if covering:
        ground = "; ".join(f"legal hold {h.hold_id}: {h.reason}" for h in covering)
        return _held(base, HoldCause.LEGAL_HOLD, ground, None)
    if contract is not None and contract.retention is not None:
        until = max(contract.retention.until_us(e.written_at_us) for e in entries)
        if until > now_us:
            # A retention obligation (GDPR Art. 17(3)(b)): kept, on the
            # contract's ground, until the last version's obligation ends.
            return _held(base, HoldCause.RETENTION, contract.retention_ground or "", until)
    return base


def _held(base: GroupPlan, cause: HoldCause, ground: str, until: int | None) -> GroupPlan:
    return GroupPlan(
        base.namespace,
        base.contract,
        base.key_name,
        base.entries,
        held_by=cause,
        ground=ground,
        held_until_us=until,
        foreign_key_ids=base.foreign_key_ids,
    )
