"""Evidence from the verified replay: the archive, the broker, or both.

The exports verify nothing themselves: they take the events the point-in-time
replay (:func:`cachet.materializers.replay.iter_verified`) released, whose
every seal (all required schemes), Merkle leaf, hash chain, sequence, topic
and order it checked exactly as a live node does, and the key-registry
statements whose trust-anchor signatures verified. What the replay refused
is counted in the :class:`VerificationSummary`, never exported.

The whole source is read (no time cut): registrations published after the
window (the exporter's own, say) are needed, and only a source read to its
end lets the replay judge every unsealed record and every missing leaf.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from cachet.materializers.evidence.records import (
    Attestation,
    EvidenceRecord,
    RefusedRecord,
    SealProof,
    VerificationSummary,
)
from cachet.materializers.replay import (
    Refusal,
    ReplaySource,
    ReplayTrust,
    VerifiedEvent,
    iter_verified,
)
from cachet.topics import Topic

__all__ = ["ReplayEvidenceSource"]


class ReplayEvidenceSource:
    """An :class:`~.records.EvidenceSource` over a replay source.

    ``progress`` is called with the number of verified events so far
    (every 1000, and at the end).
    """

    def __init__(
        self,
        source: ReplaySource,
        trust: ReplayTrust,
        *,
        label: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self._source = source
        self._trust = trust
        self._progress = progress
        self._prefix = source.names.prefix
        self._summary = VerificationSummary(source=label or source.label)

    @property
    def summary(self) -> VerificationSummary:
        return self._summary

    def _refused(self, refusal: Refusal) -> None:
        status = ",".join(s.value for s in refusal.statuses) or refusal.reason.value
        self._summary.refused.append(
            RefusedRecord(status, refusal.detail, refusal.topic, refusal.partition, refusal.offset)
        )

    def _record(self, verified: VerifiedEvent) -> EvidenceRecord:
        seal = verified.seal
        return EvidenceRecord(
            event=verified.event,
            topic=Topic(verified.topic.removeprefix(self._prefix)),
            partition=verified.partition,
            offset=verified.offset,
            raw=verified.raw,
            attestation=Attestation.ANCHOR_SIGNED if seal is None else Attestation.SEALED,
            seal=None
            if seal is None
            else SealProof(
                producer_id=seal.producer_id,
                seal_seq=seal.seal_seq,
                leaf_index=seal.leaf_index,
                key_set_id=seal.key_set_id,
                sealed_at_us=seal.sealed_at_us,
                merkle_root=seal.merkle_root,
            ),
        )

    def records(self) -> Iterator[EvidenceRecord]:
        for verified in iter_verified(self._source, trust=self._trust, on_refused=self._refused):
            self._summary.verified += 1
            if self._progress is not None and self._summary.verified % 1000 == 0:
                self._progress(self._summary.verified)
            yield self._record(verified)
        if self._progress is not None:
            self._progress(self._summary.verified)
