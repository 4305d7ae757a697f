"""``cachet tokens``: a token is printed once, only its hash is stored, and
the token printed is the one the front accepts."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from cachet.cli.main import main
from cachet.config import Role, load_config
from cachet.producers.http.credentials import (
    CredentialError,
    Principal,
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
