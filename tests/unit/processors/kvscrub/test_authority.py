"""Who may make a scrub worker act: the authority check and its setting."""

from __future__ import annotations

import pytest

from cachet.config import ConfigError, parse_config
from cachet.processors.kvscrub.intake import RequestAuthority
from cachet.schemas.events import EventType

SCRUB = EventType.KV_SCRUB_REQUESTED
ERASE = EventType.ERASURE_REQUESTED


def test_allowed_identities_may_ask_for_scrubs_and_erasures() -> None:
    authority = RequestAuthority.of(["erasure-svc"], own="w1")
    assert authority.permits("erasure-svc", SCRUB) and authority.permits("erasure-svc", ERASE)
    # Another type on the same topics is never a request, whoever sealed it.
    assert not authority.permits("erasure-svc", EventType.KV_SCRUB_COMPLETED)


def test_the_worker_itself_may_end_its_requests_but_not_erase() -> None:
    authority = RequestAuthority.of([], own="w1")
    assert authority.permits("w1", SCRUB)
    assert not authority.permits("w1", ERASE)


def test_anyone_else_is_refused() -> None:
    authority = RequestAuthority.of(["erasure-svc"], own="w1")
    for identity in ("intruder", "erasure-svc2", "w1x", ""):
        assert not authority.permits(identity, SCRUB) and not authority.permits(identity, ERASE)


def test_allowed_requesters_setting_defaults_to_nobody() -> None:
    assert parse_config({}).kvscrub.allowed_requesters == ()
    config = parse_config({"kvscrub": {"allowed_requesters": ["erasure-svc", "node-a"]}})
    assert config.kvscrub.allowed_requesters == ("erasure-svc", "node-a")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (["node-a@0123"], "not a producer identity"),
        ("node-a", "array of non-empty strings"),
        (["node-a", "node-a"], "duplicate"),
    ],
)
def test_allowed_requesters_setting_refuses_what_is_not_an_identity(
    value: object, match: str
) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        parse_config({"kvscrub": {"allowed_requesters": value}})
    assert "kvscrub.allowed_requesters" in str(err.value)
