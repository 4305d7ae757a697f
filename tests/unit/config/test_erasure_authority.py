"""``[erasure] allowed_requesters`` and ``processor_identity``: who nodes obey."""

from __future__ import annotations

import pytest

from cachet.config import ConfigError, parse_config


def test_defaults_trust_nobody_to_request_and_the_erasure_identity_to_complete() -> None:
    config = parse_config({}, "test")
    assert config.erasure.allowed_requesters == ()
    assert config.erasure.processor_identity == "erasure"


def test_identities_are_read() -> None:
    config = parse_config(
        {"erasure": {"allowed_requesters": ["dpo", "dpo-2"], "processor_identity": "eraser-1"}},
        "test",
    )
    assert config.erasure.allowed_requesters == ("dpo", "dpo-2")
    assert config.erasure.processor_identity == "eraser-1"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"allowed_requesters": ["dpo@1a2b"]}, "allowed_requesters"),  # an epoch, not an identity
        ({"allowed_requesters": "dpo"}, "allowed_requesters"),
        ({"processor_identity": "has space"}, "processor_identity"),
        ({"processor_identity": ""}, "processor_identity"),
    ],
)
def test_bad_identities_are_refused_naming_the_key(table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_config({"erasure": table}, "test")
