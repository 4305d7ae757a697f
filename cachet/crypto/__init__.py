"""Cachet's cryptography: signing backends, Merkle trees, seals, AEAD,
keyed identifiers, the keystore and the key registry.

Import from the submodules (``cachet.crypto.seal``, ``cachet.crypto.merkle``,
...); this package imports nothing itself, so importing one piece does not
load every native library.
"""

__all__: list[str] = []
