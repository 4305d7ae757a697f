"""Secret-shaped values are compared in constant time, everywhere.

``==`` on a digest, MAC, Merkle root, signature or commitment returns at the
first differing byte, so the time it takes tells an attacker how much of a
forged value was right. Every such comparison must go through
``hmac.compare_digest``. A reviewer does not see a new ``==`` among a
thousand lines, so this test walks the source with :mod:`ast` and fails on
any ``==`` / ``!=`` whose operand names (variables or attributes) contain
one of :data:`SECRET_WORDS`.

What is not a comparison of secret values is excluded by rule (each rule
says why below) or listed in :data:`ALLOWED` with a reason. Entries are
keyed by file and the comparison's source text (not line numbers, which
move), and an entry that no longer matches anything fails the test, so the
list never outlives the code it excuses.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# The packages of the distribution (cachet/ and what pyproject maps into it).
SOURCE_DIRS = ("cachet", "producers", "processors", "materializers", "schemas")
SECRET_WORDS = re.compile(r"hash|digest|mac|root|signature|commitment|tag", re.IGNORECASE)
# Sizes, not values: HASH_SIZE, TAG_BYTES, scheme.signature_size ...
_SIZE_NAME = re.compile(r"(_size|_bytes)$", re.IGNORECASE)

# (file, comparison as ast.unparse writes it) -> why it is not a secret comparison.
ALLOWED: dict[tuple[str, str], str] = {
    (
        "materializers/live_view.py",
        "self._state_hash[0] != self._commits",
    ): "compares the commit counter memoised next to the state hash, not the hash",
    (
        "producers/http/credentials.py",
        "len(t.token_sha256) != hashlib.sha256().digest_size",
        # hashlib in the name, not a hash value
    ): "compares a stored hash's length with SHA-256's digest size, both public",
}


def _is_len_call(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len"


def _secret_names(operand: ast.expr) -> list[str]:
    """Names in ``operand`` that look like a secret-shaped value."""
    if _is_len_call(operand):
        return []  # a length is public even when the value is not
    if isinstance(operand, ast.Compare):
        return []  # a boolean (e.g. `(a is None) == (b is None)`), not the value itself
    found = []
    for node in ast.walk(operand):
        name = (
            node.id
            if isinstance(node, ast.Name)
            else node.attr
            if isinstance(node, ast.Attribute)
            else None
        )
        if name and SECRET_WORDS.search(name) and not _SIZE_NAME.search(name):
            found.append(name)
    return found


def _literal_number_or_none(node: ast.expr) -> bool:
    # `tag == 1`, `x != None`: a comparison with a literal number or None is a
    # structural test, not an equality of two secret-shaped byte strings.
    return isinstance(node, ast.Constant) and (
        node.value is None or isinstance(node.value, bool | int | float)
    )


def find_variable_time_compares(source: str) -> list[tuple[int, str]]:
    """(line, source text) of every ``==`` / ``!=`` on a secret-shaped name."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            continue
        operands = [node.left, *node.comparators]
        if any(_literal_number_or_none(o) for o in operands):
            continue
        if any(_secret_names(o) for o in operands):
            out.append((node.lineno, ast.unparse(node)))
    return out


def _source_files() -> list[Path]:
    files: list[Path] = []
    for directory in SOURCE_DIRS:
        files += sorted((ROOT / directory).rglob("*.py"))
    return files


def test_the_scanner_flags_digest_equality_and_nothing_structural() -> None:
    flagged = find_variable_time_compares(
        "a = seal.merkle_root == computed\n"
        "b = mac != expected\n"
        "c = got == header.leaf_topics_digest\n"
        "d = signature_b64 == other\n"
        "e = len(digest) == HASH_SIZE\n"
        "f = tag == 1\n"
        "g = root is None\n"
        "h = (digest is None) == (other is None)\n"
        "i = hmac.compare_digest(root, expected)\n"
        "j = count == limit\n"
    )
    assert [line for line, _ in flagged] == [1, 2, 3, 4]


def test_no_variable_time_comparison_of_secret_shaped_values() -> None:
    files = _source_files()
    assert len(files) > 50, "the walk must cover the whole distribution"
    seen_allowed: set[tuple[str, str]] = set()
    offending: list[str] = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for line, text in find_variable_time_compares(path.read_text("utf-8")):
            if (rel, text) in ALLOWED:
                seen_allowed.add((rel, text))
            else:
                offending.append(f"{rel}:{line}: {text}")
    assert not offending, (
        "compare digests, MACs, roots and signatures with hmac.compare_digest "
        "(or allow-list a non-secret comparison with its reason):\n" + "\n".join(offending)
    )
    stale = sorted(set(ALLOWED) - seen_allowed)
    assert not stale, f"ALLOWED entries that match nothing any more; remove them: {stale}"
