"""``cachet tokens``: a token is printed once, only its hash is stored, and
the token printed is the one the front accepts, until its expiry."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from cachet.cli.main import main
from cachet.clock import SYSTEM_CLOCK, ManualClock
from cachet.config import Role, load_config
from cachet.config.build_http import format_timestamp_us
from cachet.producers.http.credentials import (
    CredentialError,
    Principal,
    TokenExpired,
    TokenStore,
    load_tokens_file,
    new_token,
    token_digest,
)


@pytest.fixture
def config(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.delenv("CACHET_CONFIG", raising=False)
    path = tmp_path / "cachet.toml"
    path.write_text(f'[http]\ntokens_file = "{tmp_path}/var/tokens.toml"\n')
    return path


def _add(config: Path, capsys, *args: str) -> dict:
    assert main(["tokens", "add", "--config", str(config), "--json", *args]) == 0
    return json.loads(capsys.readouterr().out.splitlines()[-1])


def test_add_prints_a_token_once_and_stores_only_its_hash(config: Path, capsys) -> None:
    out = _add(
        config, capsys, "--principal", "dpo-a", "--role", "data-protection", "--scope", "t-a"
    )
    token = out["token"]
    path = config.parent / "var" / "tokens.toml"
    text = path.read_text()
    assert token not in text and token.split("_", 1)[1] not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store = TokenStore(load_tokens_file(path))
    assert store.authenticate(token) == Principal("dpo-a", Role.DATA_PROTECTION, "t-a")
    second = _add(config, capsys, "--principal", "aud", "--role", "auditor")["token"]
    store = TokenStore(load_tokens_file(path))
    assert store.authenticate(second) == Principal("aud", Role.AUDITOR, None)
    assert store.authenticate(token) is not None  # the first one is kept


def test_list_and_remove(config: Path, capsys) -> None:
    token = _add(config, capsys, "--principal", "reg", "--role", "regulator")["token"]
    assert main(["tokens", "list", "--config", str(config), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["principal"] for t in listed["tokens"]] == ["reg"]
    assert token not in json.dumps(listed)
    assert main(["tokens", "remove", "--config", str(config), "--principal", "reg"]) == 0
    path = config.parent / "var" / "tokens.toml"
    assert TokenStore(load_tokens_file(path)).authenticate(token) is None


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--principal", "a.b", "--role", "owner"], "--principal 'a.b': must match"),
        (["--principal", "ab", "--role", "root"], "--role 'root': expected one of"),
        (["--principal", "ab", "--role", "owner", "--scope", "x\ny"], "printable"),
    ],
)
def test_bad_arguments_are_one_line_errors(config: Path, capsys, args, error: str) -> None:
    assert main(["tokens", "add", "--config", str(config), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and error in err
    assert not (config.parent / "var" / "tokens.toml").exists()


def test_a_principal_is_added_once(config: Path, capsys) -> None:
    _add(config, capsys, "--principal", "o", "--role", "owner")
    assert (
        main(["tokens", "add", "--config", str(config), "--principal", "o", "--role", "owner"]) == 2
    )
    assert "already has a token" in capsys.readouterr().err


def test_the_tokens_file_and_the_config_tokens_are_both_accepted(config: Path, capsys) -> None:
    in_file = _add(config, capsys, "--principal", "filed", "--role", "owner")["token"]
    inline = new_token()
    table = (
        f'[http.tokens.inline]\ntoken_sha256 = "{token_digest(inline).hex()}"\nrole = "auditor"\n'
    )
    config.write_text(config.read_text() + table)
    store = TokenStore.from_config(load_config(config))
    assert store.authenticate(in_file) == Principal("filed", Role.OWNER, None)
    assert store.authenticate(inline) == Principal("inline", Role.AUDITOR, None)
    # The same principal in both places is one too many.
    config.write_text(config.read_text().replace("[http.tokens.inline]", "[http.tokens.filed]"))
    with pytest.raises(CredentialError, match="'filed' has two token entries"):
        TokenStore.from_config(load_config(config))


def test_a_node_with_a_missing_tokens_file_does_not_start(config: Path, capsys) -> None:
    assert main(["node", "run", "--config", str(config), "--http-port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "tokens.toml: no such tokens file" in err and "cachet tokens add" in err


def test_add_with_an_expiry_stores_it_and_the_token_works_until_then(config: Path, capsys) -> None:
    before = SYSTEM_CLOCK.now_us()
    out = _add(config, capsys, "--principal", "temp", "--role", "auditor", "--expires-in", "90d")
    after = SYSTEM_CLOCK.now_us()
    path = config.parent / "var" / "tokens.toml"
    (stored,) = load_tokens_file(path)
    assert stored.expires_at_us is not None
    ninety_days_us = 90 * 86_400 * 1_000_000
    assert before + ninety_days_us <= stored.expires_at_us <= after + ninety_days_us
    assert out["expires_at"] == format_timestamp_us(stored.expires_at_us)
    assert f'expires_at = "{out["expires_at"]}"' in path.read_text()
    clock = ManualClock(now_us=stored.expires_at_us - 1)
    store = TokenStore(load_tokens_file(path), clock=clock)
    assert store.authenticate(out["token"]) == Principal("temp", Role.AUDITOR, None)
    clock.advance(0.000001)
    with pytest.raises(TokenExpired):
        store.authenticate(out["token"])
    at = _add(
        config,
        capsys,
        *("--principal", "until", "--role", "owner", "--expires-at", "2999-03-01T01:00:00+01:00"),
    )
    assert at["expires_at"] == "2999-03-01T00:00:00Z"
    assert _add(config, capsys, "--principal", "plain", "--role", "owner")["expires_at"] is None


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--expires-in", "soon"], "--expires-in: expected a duration"),
        (["--expires-in", "90"], "--expires-in: expected a duration"),
        (["--expires-in", "0d"], "--expires-in: a duration must be positive"),
        (["--expires-in=-1h"], "--expires-in: a duration cannot be negative"),
        (["--expires-at", "2999-03-01T00:00:00"], "--expires-at: '2999-03-01T00:00:00' has no UTC"),
        (["--expires-at", "tomorrow"], "--expires-at: expected an RFC 3339 timestamp"),
        (["--expires-at", "2001-01-01T00:00:00Z"], "is not in the future"),
    ],
)
def test_a_bad_expiry_is_a_one_line_error_naming_the_option(
    config: Path, capsys, args: list[str], error: str
) -> None:
    code = main(["tokens", "add", "--config", str(config), "--principal", "p", "--role", "owner"])
    assert code == 0
    capsys.readouterr()
    path = config.parent / "var" / "tokens.toml"
    before = path.read_text()
    add = ["tokens", "add", "--config", str(config), "--principal", "q", "--role", "owner", *args]
    assert main(add) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and error in err
    assert path.read_text() == before  # nothing added


def test_list_shows_each_expiry_and_marks_the_expired(config: Path, capsys) -> None:
    _add(
        config,
        capsys,
        "--principal",
        "later",
        "--role",
        "owner",
        "--expires-at",
        "2999-01-01T00:00:00Z",
    )
    _add(config, capsys, "--principal", "plain", "--role", "auditor")
    path = config.parent / "var" / "tokens.toml"
    # A token that has already expired (add refuses to make one: write it).
    path.write_text(
        path.read_text()
        + f'\n[tokens.gone]\ntoken_sha256 = "{token_digest(new_token()).hex()}"\n'
        + 'role = "owner"\nexpires_at = "2001-01-01T00:00:00Z"\n'
    )
    assert main(["tokens", "list", "--config", str(config)]) == 0
    lines = {line.split("\t")[0]: line.split("\t") for line in capsys.readouterr().out.splitlines()}
    assert lines["later"][3] == "2999-01-01T00:00:00Z"
    assert lines["plain"][3] == "never"
    assert lines["gone"][3] == "2001-01-01T00:00:00Z (expired)"
    assert main(["tokens", "list", "--config", str(config), "--json"]) == 0
    listed = {t["principal"]: t for t in json.loads(capsys.readouterr().out)["tokens"]}
    assert (listed["later"]["expires_at"], listed["later"]["expired"]) == (
        "2999-01-01T00:00:00Z",
        False,
    )
    assert (listed["plain"]["expires_at"], listed["plain"]["expired"]) == (None, False)
    assert (listed["gone"]["expires_at"], listed["gone"]["expired"]) == (
        "2001-01-01T00:00:00Z",
        True,
    )
