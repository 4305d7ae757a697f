"""``cachet keys``: the trust anchor, producer key sets, rotation, revocation.

Private keys live in the keystore file, encrypted under the key-encryption
key (KEK) from ``--kek-file``, ``keys.kek_file`` or the environment variable
named by ``keys.kek_env`` (default ``CACHET_KEK``). Registration, rotation
and revocation are anchor-signed events on the ``control`` topic.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
from pathlib import Path

from cachet.cli.context import CliContext, emit_json, fail
from cachet.clock import SYSTEM_CLOCK
from cachet.crypto.keystore import Keystore, load_kek
from cachet.crypto.keystore import open_keystore as crypto_open_keystore
from cachet.crypto.registry import RevocationReason
from cachet.crypto.seal import PrivateKeySet
from cachet.kafka.control import publish_to, register_key_set
from cachet.ledger.anchor import anchor_to_json
from cachet.ledger.registration import registration_payload, revocation_payload, rotation_payload
from cachet.producers.cache_node import NodeKeys
from cachet.schemas.events import EventType

ANCHOR_FILE = "anchor.json"


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    keys_parent = argparse.ArgumentParser(add_help=False, parents=[parent])
    keys_parent.add_argument(
        "--kek-file",
        type=Path,
        default=None,
        help="key-encryption key file (default keys.kek_file, else $CACHET_KEK)",
    )
    keys_parent.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p = sub.add_parser(
        "keys", parents=[parent], help="signing keys and the trust anchor", description=__doc__
    )
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    i = ks.add_parser(
        "init",
        parents=[keys_parent],
        help="create the keystore, trust anchor and this node's key set",
    )
    i.add_argument("--identity", default=None, help="producer identity (default node.node_id)")
    i.add_argument(
        "--generate-kek",
        type=Path,
        metavar="PATH",
        default=None,
        help="write a new random KEK to PATH (mode 0600) and use it",
    )
    i.add_argument("--if-missing", action="store_true", help="do nothing if the keystore exists")
    i.add_argument("--publish", action="store_true", help="also publish the registration")
    i.set_defaults(handler=run_init)

    r = ks.add_parser(
        "register",
        parents=[keys_parent],
        help="new key set for an identity, registered on the control topic",
    )
    r.add_argument("--identity", required=True)
    r.set_defaults(handler=run_register)

    ro = ks.add_parser(
        "rotate",
        parents=[keys_parent],
        help="replace an identity's key set; the old one retires now",
    )
    ro.add_argument("--identity", required=True)
    ro.set_defaults(handler=run_rotate)

    rv = ks.add_parser(
        "revoke",
        parents=[keys_parent],
        help="revoke a key set: seals made at or after the compromise time fail",
    )
    rv.add_argument("--identity", required=True)
    rv.add_argument("--key-set", required=True, help="key set id (see `cachet keys list`)")
    rv.add_argument(
        "--compromised-at",
        default="now",
        help="ISO 8601 time, microseconds since the epoch, or 'now'",
    )
    rv.add_argument(
        "--reason",
        default=RevocationReason.KEY_COMPROMISE.value,
        choices=[r.value for r in RevocationReason],
    )
    rv.set_defaults(handler=run_revoke)

    ls = ks.add_parser("list", parents=[keys_parent], help="key sets in the keystore")
    ls.set_defaults(handler=run_list)


def _kek(ctx: CliContext, args: argparse.Namespace) -> bytes:
    file = args.kek_file or ctx.config.keys.kek_file
    env = None if file else os.environ.get(ctx.config.keys.kek_env)
    return load_kek(file, env)


def open_keystore(ctx: CliContext, args: argparse.Namespace) -> Keystore:
    """The keystore of the config, unlocked with the KEK the options name."""
    keys = ctx.config.keys
    return crypto_open_keystore(
        keys.keystore_path, args.kek_file or keys.kek_file, keys.kek_env, os.environ
    )


def publish_registration(ctx: CliContext, store: Keystore, identity: str) -> PrivateKeySet:
    """A new key set for ``identity``, stored and registered on the control topic."""
    return register_key_set(ctx.bootstrap_servers, ctx.topic_names, store, identity)


def _publish(ctx: CliContext, event_type: EventType, payload: dict) -> None:
    publish_to(ctx.bootstrap_servers, ctx.topic_names, event_type, payload)


def _time_us(text: str) -> int:
    if text == "now":
        return SYSTEM_CLOCK.now_us()
    if text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise SystemExit(
            f"cachet: error: --compromised-at {text!r}: not ISO 8601, µs or 'now'"
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1_000_000)


def run_init(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    path = ctx.config.keys.keystore_path
    if path.exists() and args.if_missing:
        print(f"keystore {path} exists; nothing to do")
        return 0
    if args.generate_kek:
        if args.generate_kek.exists():
            return fail(
                f"--generate-kek {args.generate_kek}: file exists; refusing to overwrite a KEK"
            )
        args.generate_kek.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(args.generate_kek, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        args.kek_file = args.generate_kek
    kek = _kek(ctx, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = Keystore.create(path, kek)
    anchor = PrivateKeySet.generate()
    store.set_anchor(anchor)
    store.set_identifier_secret(secrets.token_bytes(32))
    identity = args.identity or ctx.config.node.node_id
    node_keys = PrivateKeySet.generate()
    store.add_key_set(identity, node_keys)
    # Creates the vault's KEK in the keystore and the vault itself.
    NodeKeys.from_keystore(store, identity, ctx.config.vault).vault.close()
    anchor_path = path.parent / ANCHOR_FILE
    anchor_path.write_text(anchor_to_json(anchor.public()))
    if args.publish:
        _publish(
            ctx,
            EventType.SIGNING_KEY_REGISTERED,
            registration_payload(identity, node_keys.public(), 0, anchor),
        )
    out = {
        "keystore": str(path),
        "anchor_file": str(anchor_path),
        "trust_anchor_id": anchor.key_set_id,
        "identity": identity,
        "key_set_id": node_keys.key_set_id,
        "published": bool(args.publish),
    }
    if args.json:
        emit_json(out)
    else:
        print(
            f"keystore      {path}\nanchor file   {anchor_path}\n"
            f"identity      {identity} -> key set {node_keys.key_set_id}\n"
            f'pin the anchor in cachet.toml:  [keys] trust_anchor_id = "{anchor.key_set_id}"'
        )
    return 0


def run_register(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    store = open_keystore(ctx, args)
    keys = PrivateKeySet.generate()
    store.add_key_set(args.identity, keys)
    _publish(
        ctx,
        EventType.SIGNING_KEY_REGISTERED,
        registration_payload(args.identity, keys.public(), SYSTEM_CLOCK.now_us(), store.anchor()),
    )
    _report(args, {"identity": args.identity, "key_set_id": keys.key_set_id, "registered": True})
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    store = open_keystore(ctx, args)
    old = store.key_set(args.identity)
    new = PrivateKeySet.generate()
    store.add_key_set(args.identity, new)
    _publish(
        ctx,
        EventType.SIGNING_KEY_ROTATED,
        rotation_payload(
            args.identity, old.key_set_id, new.public(), SYSTEM_CLOCK.now_us(), store.anchor()
        ),
    )
    store.retire(args.identity, old.key_set_id)  # its private keys are destroyed
    _report(
        args,
        {
            "identity": args.identity,
            "old_key_set_id": old.key_set_id,
            "new_key_set_id": new.key_set_id,
        },
    )
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    store = open_keystore(ctx, args)
    at = _time_us(args.compromised_at)
    _publish(
        ctx,
        EventType.SIGNING_KEY_REVOKED,
        revocation_payload(args.identity, args.key_set, at, args.reason, store.anchor()),
    )
    _report(args, {"identity": args.identity, "key_set_id": args.key_set, "compromised_at_us": at})
    return 0


def run_list(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    store = open_keystore(ctx, args)
    rows = [
        {
            "identity": pid,
            "key_set_id": s.key_set.key_set_id,
            "retired": s.retired,
            "schemes": sorted(x.value for x in s.key_set.public_keys),
        }
        for pid in store.producer_ids()
        for s in store.key_sets(pid)
    ]
    if args.json:
        emit_json({"trust_anchor_id": store.anchor().key_set_id, "key_sets": rows})
        return 0
    print(f"trust anchor {store.anchor().key_set_id}")
    for r in rows:
        print(f"  {r['identity']:24s} {r['key_set_id']}  {'retired' if r['retired'] else 'active'}")
    return 0


def _report(args: argparse.Namespace, out: dict) -> None:
    if args.json:
        emit_json(out)
    else:
        print("  ".join(f"{k}={v}" for k, v in out.items()))
