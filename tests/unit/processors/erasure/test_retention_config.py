"""``retention`` / ``retention_ground`` of a contract: parsed, or a clear error
naming the key; contracts without them publish the bytes they did before."""

from __future__ import annotations

import json

import pytest

from cachet.config import parse_config
from cachet.config.contract import Retention
from cachet.config.errors import ConfigError


def contract(**keys: object):
    return parse_config({"contracts": {"books": keys}}, "test").contracts["books"]


@pytest.mark.parametrize(
    ("value", "years", "extra_ms", "text"),
    [
        ("6y", 6, 0, "6y"),
        ("6y30d", 6, 30 * 86_400_000, "6y30d"),
        ("2555d", 0, 2555 * 86_400_000, "2555d"),
        ("3s", 0, 3000, "3s"),
        ("1h30m", 0, 5_400_000, "1h30m"),
        ("250ms", 0, 250, "250ms"),
        (4000, 0, 4000, "4s"),
    ],
)
def test_retention_values(value: object, years: int, extra_ms: int, text: str) -> None:
    c = contract(retention=value, retention_ground="FINRA 4511")
    assert c.retention == Retention(years, extra_ms)
    assert c.retention.text == text
    assert json.loads(c.canonical_json())["retention"] == text
    assert json.loads(c.canonical_json())["retention_ground"] == "FINRA 4511"


@pytest.mark.parametrize(
    ("keys", "key", "says"),
    [
        ({"retention": "6y"}, "contracts.books.retention", "must name its legal ground"),
        ({"retention": "6y", "retention_ground": " "}, "retention_ground", "non-empty"),
        ({"retention_ground": "FINRA"}, "contracts.books.retention_ground", "without 'retention'"),
        ({"retention": "6 years", "retention_ground": "g"}, "retention", "expected a retention"),
        ({"retention": "1.5y", "retention_ground": "g"}, "retention", "expected a retention"),
        ({"retention": "-1y", "retention_ground": "g"}, "retention", "expected a retention"),
        ({"retention": "0d", "retention_ground": "g"}, "retention", "must be positive"),
        ({"retention": 0, "retention_ground": "g"}, "retention", "must be positive"),
        ({"retention": True, "retention_ground": "g"}, "retention", "expected a retention"),
        ({"retention": "", "retention_ground": "g"}, "retention", "expected a retention"),
    ],
)
def test_bad_retention_is_refused_naming_the_key(keys: dict, key: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        contract(**keys)
    assert key in str(caught.value)


def test_a_contract_without_retention_publishes_what_it_did_before() -> None:
    doc = json.loads(contract().canonical_json())
    assert "retention" not in doc and "retention_ground" not in doc
