"""Bad arguments to an erasure request or legal hold: refused by name, before
anything is emitted (the producer is never touched)."""

from __future__ import annotations

import pytest

from cachet.crypto.identifiers import IdentifierHasher
from cachet.producers.erasure_request import (
    ErasureRequestError,
    lift_legal_hold,
    request_erasure,
    set_legal_hold,
)

HASHER = IdentifierHasher(b"s" * 32)
NO_PRODUCER = None  # any use of it would raise AttributeError, not the typed error


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"subject": ""}, "subject"),
        ({"subject": "  "}, "subject"),
        ({"namespace": ""}, "namespace"),
        ({"requested_by": ""}, "requested_by"),
        ({"legal_basis": ""}, "legal_basis"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": float("nan")}, "timeout_s"),
        ({"timeout_s": True}, "timeout_s"),
    ],
)
def test_request_erasure_names_the_bad_argument(kwargs: dict, named: str) -> None:
    args = {"subject": "patient-1", "requested_by": "dpo", **kwargs}
    subject = args.pop("subject")
    with pytest.raises(ErasureRequestError, match=f"^{named}:"):
        request_erasure(NO_PRODUCER, HASHER, subject, **args)  # type: ignore[arg-type]


def test_a_hold_needs_a_subject_or_a_namespace() -> None:
    with pytest.raises(ErasureRequestError, match="a subject, a namespace, or both"):
        set_legal_hold(NO_PRODUCER, HASHER, reason="r", changed_by="c")  # type: ignore[arg-type]
    with pytest.raises(ErasureRequestError, match="^reason:"):
        set_legal_hold(NO_PRODUCER, HASHER, namespace="eu", reason="", changed_by="c")  # type: ignore[arg-type]
    with pytest.raises(ErasureRequestError, match="^hold_id:"):
        lift_legal_hold(NO_PRODUCER, "", reason="r", changed_by="c")  # type: ignore[arg-type]
