"""Signing backends: ``wheels`` (always present) and ``oqs`` (only when liboqs is).

Nothing here imports ``oqs`` at import time; ``cachet.crypto.signing``
imports :mod:`cachet.crypto.backends.oqs` only after it found the library.
Backends import their vocabulary from :mod:`cachet.crypto.schemes`, never
from ``cachet.crypto.signing``, which imports them.
"""
