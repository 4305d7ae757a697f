"""Typed errors of the evidence exports."""

from __future__ import annotations

from cachet.errors import CachetError

__all__ = [
    "EvidenceError",
    "ExportSourceError",
    "ManifestError",
    "SignerError",
    "UnknownContract",
    "WindowError",
]


class EvidenceError(CachetError):
    """An evidence export could not be made or checked."""


class WindowError(EvidenceError):
    """An export window or a time in it is not valid."""


class UnknownContract(EvidenceError):
    """The contract named for an examination export is not known."""


class ExportSourceError(EvidenceError):
    """The log or archive an export reads could not be read to its end."""


class SignerError(EvidenceError):
    """The exporting identity cannot sign: no key set, or no anchor-signed
    registration of it in the source."""


class ManifestError(EvidenceError):
    """A manifest or its signature file is malformed (not merely unverified)."""
