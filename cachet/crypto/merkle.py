"""Merkle trees over a seal's events: RFC 6962 / RFC 9162 shape, SHA3-256.

* ``leaf_hash(d) = SHA3-256(0x00 || d)``
* ``node_hash(l, r) = SHA3-256(0x01 || l || r)``
* the root of n > 1 leaves splits at k, the largest power of two < n:
  ``MTH(D[0:n]) = node_hash(MTH(D[0:k]), MTH(D[k:n]))``; the root of one leaf
  is its leaf hash; the root of the empty tree is ``SHA3-256("")``.

The 0x00 / 0x01 prefixes keep a leaf from being passed off as an inner node
(the second-preimage attack on unprefixed Merkle trees). The verifier is
RFC 9162 §2.1.3.2 step for step, with every input length checked.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

__all__ = [
    "HASH_SIZE",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
    "verify_inclusion",
]

HASH_SIZE = 32
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


# The prefixes absorbed once; a hash copies the state and adds its input
# (the same bytes as hashing prefix + input, without a new context per hash:
# one per event on the producer and on every verifier).
_LEAF_STATE = hashlib.sha3_256(_LEAF_PREFIX)
_NODE_STATE = hashlib.sha3_256(_NODE_PREFIX)


def leaf_hash(data: bytes) -> bytes:
    """The leaf hash of one event's bytes."""
    h = _LEAF_STATE.copy()
    h.update(data)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an inner node from its two children."""
    h = _NODE_STATE.copy()
    h.update(left + right)
    return h.digest()


def _split(n: int) -> int:
    """The largest power of two strictly less than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_hashes(hashes: Sequence[bytes]) -> None:
    for i, h in enumerate(hashes):
        if len(h) != HASH_SIZE:
            raise ValueError(f"leaf hash {i} is {len(h)} bytes, expected {HASH_SIZE}")


def _root(hashes: Sequence[bytes]) -> bytes:
    n = len(hashes)
    if n == 1:
        return hashes[0]
    k = _split(n)
    return node_hash(_root(hashes[:k]), _root(hashes[k:]))


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash (root) of the given leaf hashes, in order."""
    _check_hashes(leaf_hashes)
    if not leaf_hashes:
        return hashlib.sha3_256(b"").digest()
    return _root(leaf_hashes)


def _path(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    # RFC 6962 §2.1.1 PATH(m, D[n]), bottom-up order.
    n = len(hashes)
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return _path(index, hashes[:k]) + [_root(hashes[k:])]
    return _path(index - k, hashes[k:]) + [_root(hashes[:k])]


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The audit path for leaf ``index`` (sibling hashes, leaf level first)."""
    _check_hashes(leaf_hashes)
    if not 0 <= index < len(leaf_hashes):
        raise IndexError(f"leaf index {index} outside a tree of {len(leaf_hashes)} leaves")
    return _path(index, leaf_hashes)


def _proof_length(index: int, tree_size: int) -> int:
    """How many hashes PATH(index, D[tree_size]) has (RFC 6962 §2.1.1)."""
    length = 0
    while tree_size > 1:
        k = _split(tree_size)
        if index < k:
            tree_size = k
        else:
            index -= k
            tree_size -= k
        length += 1
    return length


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """True iff ``proof`` shows ``leaf`` (a leaf hash) at ``index`` of a tree of
    ``tree_size`` leaves with root ``root``. RFC 9162 §2.1.3.2.

    Rejects: an empty tree, ``index >= tree_size``, negative numbers, any
    hash that is not 32 bytes, a proof of the wrong length, a wrong root.
    Never raises on malformed input.

    ``tree_size`` and ``root`` must come together from a verified seal
    header: an RFC 9162 root does not commit to the tree size, and some
    other sizes walk the same path to the same root (index 0 of 17 and 18).
    """
    if not (isinstance(index, int) and isinstance(tree_size, int)):
        return False
    if tree_size <= 0 or index < 0 or index >= tree_size:
        return False
    if len(leaf) != HASH_SIZE or len(root) != HASH_SIZE:
        return False
    if any(len(p) != HASH_SIZE for p in proof):
        return False
    if len(proof) != _proof_length(index, tree_size):
        return False
    fn, sn = index, tree_size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                # Right edge: climb until fn is a right child (or the root).
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return False
    # Constant-time compare: the root is public, but the habit costs nothing.
    return hmac.compare_digest(r, root)
