"""The trust anchor's public key set, as a file operators pin and share.

The anchor signs every key registration, so whoever controls which anchor a
verifier trusts controls what it accepts. The anchor file is therefore
checked against its id: the id is derived from the public keys
(``derive_key_set_id``), so pinning the id in ``cachet.toml``
(``keys.trust_anchor_id``) pins the exact keys.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
from pathlib import Path

from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import KeySet, derive_key_set_id
from cachet.errors import CachetError

__all__ = ["AnchorError", "UNPINNED", "anchor_from_json", "anchor_to_json", "load_anchor"]

log = logging.getLogger(__name__)

# The configuration default: no anchor id pinned yet.
UNPINNED = "root"
FORMAT = "cachet.anchor/v1"


class AnchorError(CachetError):
    """An anchor file is malformed, or not the pinned anchor."""


def anchor_to_json(anchor: KeySet) -> str:
    return (
        json.dumps(
            {
                "format": FORMAT,
                "key_set_id": anchor.key_set_id,
                "public_keys": {
                    s.value: base64.b64encode(pk).decode() for s, pk in anchor.public_keys.items()
                },
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )


def anchor_from_json(text: str, source: str = "anchor") -> KeySet:
    """Parse an anchor file; its id must be the one derived from its keys."""
    try:
        doc = json.loads(text)
        if doc.get("format") != FORMAT:
            raise AnchorError(f"{source}: not a {FORMAT} file")
        keys = {
            SignatureScheme(s): base64.b64decode(v, validate=True)
            for s, v in doc["public_keys"].items()
        }
        anchor = KeySet(doc["key_set_id"], keys)
    except AnchorError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise AnchorError(f"{source}: malformed anchor: {exc}") from exc
    derived = derive_key_set_id(dict(anchor.public_keys))
    # Defends against an anchor file whose keys were swapped under a known id.
    if not hmac.compare_digest(derived, anchor.key_set_id):
        raise AnchorError(
            f"{source}: key set id {anchor.key_set_id} does not match its keys ({derived})"
        )
    return anchor


def load_anchor(path: Path, pinned_id: str = UNPINNED) -> KeySet:
    """The anchor from ``path``; refused unless it is the pinned one (when pinned)."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise AnchorError(
            f"anchor file {path} cannot be read: {exc} (run `cachet keys init`)"
        ) from exc
    anchor = anchor_from_json(text, str(path))
    if pinned_id == UNPINNED:
        log.warning(
            "trust anchor %s is not pinned: set keys.trust_anchor_id in cachet.toml",
            anchor.key_set_id,
        )
    elif not hmac.compare_digest(pinned_id, anchor.key_set_id):
        raise AnchorError(
            f"anchor file {path} holds {anchor.key_set_id}, "
            f"but keys.trust_anchor_id pins {pinned_id}"
        )
    return anchor
