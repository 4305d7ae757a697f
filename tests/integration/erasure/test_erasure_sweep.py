"""The erasure sweep (issue 10, "done when"): after an erasure, no byte the
deployment holds gives the subject's plaintext back.

A whole deployment on the session broker: two cache nodes (`cachet node
run`) and the erasure processor (`cachet processors erasure`) as real
processes sharing a real key vault (the file vault, or PostgreSQL), and a
KV-scrub worker: the runner `cachet kvscrub worker` runs (``run_worker``),
in this process, because only in-process inference code can open sessions
on a worker: S and T each get a session whose KV blocks hold their bytes.
Subject S writes values carrying a unique marker in two namespaces through
both nodes, and into its KV blocks; subject T writes too. The marker is
served to S before the erasure (so the search below would see a leak). Then `cachet erase --subject S`; the processor's ErasureCompleted
is awaited and its certificate verified offline. Afterwards:

* no node serves S's values; T's values still read on both nodes; S's KV
  blocks are zero and T's intact;
* the marker (raw, base64 at every alignment, hex) is in no record of any
  topic (keys, values, headers), no file of the deployment (every RocksDB
  directory, the vault file or PostgreSQL's data directory, the keystore,
  every process's log, this process's log records), nor the KV pool;
* S's data keys (captured from the vault before the erasure) are in none of
  those bytes, raw or wrapped;
* no ciphertext of S on the entries topic decrypts under any key still held:
  every live key of the vault, every data key of the keystore; and no
  running process (nodes, processor) has S's keys or the marker anywhere in
  its memory (read through /proc: the nodes expose no key-cache listing, and
  memory is the whole truth; before the erasure the same search finds both,
  in L1 and the key cache). (Before the
  erasure the same attempt with S's keys decrypts them all: the attempt
  itself works.)
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cachet.cli.erase_certificate import export_certificate
from cachet.crypto.identifiers import IdentifierHasher
from cachet.crypto.schemes import SignatureScheme
from cachet.ledger.erasure_certificate import verify_certificate
from cachet.ledger.erasure_certificate_format import ErasureStatus
from cachet.producers.http.credentials import new_token
from cachet.schemas.codec import EventCodec
from tests.integration.cache.nodeproc import wait_until

from .sweep_deployment import (
    CONTRACT,
    NODES,
    PROCESSOR,
    REQUESTER,
    Deployment,
    call,
    deploy,
    kv_bytes,
    kv_session,
    run_json,
    served,
)
from .sweep_search import (
    age_out_wal,
    completed,
    decrypted,
    held_bytes,
    keystore_keys,
    memory_hits,
    patterns,
    subject_ciphertexts,
    unwrapped,
    vault_rows,
)

pytestmark = [pytest.mark.integration, pytest.mark.multinode, pytest.mark.slow]


# --- the test --------------------------------------------------------------------------


@pytest.fixture(params=["file", "postgres"])
def vault_backend(request: pytest.FixtureRequest) -> tuple[str, str | None, Path | None]:
    """(the [vault] table, the DSN, PostgreSQL's data directory)."""
    if request.param == "file":
        return '[vault]\nbackend = "file"\npath = "{root}/vault/vault.sqlite"\n', None, None
    dsn = request.getfixturevalue("postgres_dsn")
    cluster = request.getfixturevalue("postgres_cluster")
    table = f'[vault]\nbackend = "postgres"\ndsn = "{dsn}"\nvacuum_full = true\n'
    return table, dsn, cluster.data_dir


@pytest.fixture
def deployment(
    tmp_path: Path, bootstrap_servers: str, vault_backend, tokens: dict[str, str]
) -> Iterator[Deployment]:
    table, _, pg_data = vault_backend
    d = deploy(tmp_path, bootstrap_servers, table.format(root=tmp_path), pg_data, tokens)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def tokens() -> dict[str, str]:
    return {
        f"subject-s-{uuid.uuid4().hex[:8]}": new_token(),
        f"subject-t-{uuid.uuid4().hex[:8]}": new_token(),
    }


def test_erasure_sweep(deployment: Deployment, tokens: dict[str, str], vault_backend) -> None:
    d, (s, t) = deployment, list(tokens)
    s_token, t_token = tokens[s], tokens[t]
    marker = f"MARKER-{uuid.uuid4().hex}".encode()
    n1, n2 = d.nodes
    s_writes = [(n1, "eu", "s1"), (n1, "us", "s2"), (n2, "us", "s3"), (n2, "eu", "s4")]
    t_writes = [(n1, "eu", "t1"), (n2, "us", "t2")]
    for node, ns, key in s_writes:
        body = {"key": key, "value_b64": base64.b64encode(marker + key.encode()).decode()}
        call(node, s_token, "/v1/put", body | {"contract": CONTRACT, "namespace": ns, "wait": True})
    for node, ns, key in t_writes:
        body = {"key": key, "value_b64": base64.b64encode(f"T:{key}".encode()).decode()}
        call(node, t_token, "/v1/put", body | {"contract": CONTRACT, "namespace": ns, "wait": True})

    assert d.worker is not None
    s_blocks = kv_session(d.worker, s, "chat-s", marker)
    t_blocks = kv_session(d.worker, t, "chat-t", b"T-conversation")
    t_kv = kv_bytes(d.worker, t_blocks)
    assert marker in kv_bytes(d.worker, s_blocks)

    # Before: every node serves S's marker (what the search below looks for).
    for node in d.nodes:
        for _, ns, key in s_writes:
            got = wait_until(lambda n=node, k=key, ns=ns: served(n, s_token, k, ns), 20)
            assert got is not None and served(node, s_token, key, ns) == marker + key.encode()
    subject_hash = IdentifierHasher(d.keystore().identifier_secret()).subject(s)
    prefix = f"subj:{subject_hash.hex()}/"
    s_rows = [r for r in vault_rows(d, vault_backend[1]) if r[0].startswith(prefix)]
    s_keys = unwrapped(d, s_rows)
    assert {k.key_id.split("/")[1] for k in s_keys} == {"ns:eu", "ns:us"}, s_keys
    s_ciphertexts = subject_ciphertexts(d, subject_hash)
    assert len(s_ciphertexts) == len(s_writes)
    assert decrypted(s_ciphertexts, s_keys) == len(s_writes)  # the attempt itself works

    # Each node's memory holds the marker (L1) and S's keys (its key cache):
    # the memory search after the erasure can see them.
    in_memory = {"marker": marker} | {f"key {k.key_id}": k.key for k in s_keys}
    for node in d.nodes:
        assert set(memory_hits(node.proc.pid, in_memory)) == set(in_memory), node.name

    # Erase S, as the data-protection identity, through the command.
    argv = ["erase", *d.common, "--subject", s, "--identity", REQUESTER]
    out = run_json([*argv, "--kek-file", str(d.kek), "--json"])
    request_id = out["request_id"]
    assert wait_until(lambda: completed(d, request_id), 45) is not None, "no ErasureCompleted"

    # The certificate of it verifies offline and names the destroyed keys.
    store = d.keystore()
    cert = export_certificate(
        d.servers,
        d.names,
        EventCodec(),
        store.anchor().public(),
        tuple(SignatureScheme),
        request_id,
        allowed_requesters=(REQUESTER,),
        processor_identity=PROCESSOR,
    )
    report = verify_certificate(
        cert,
        pinned_anchor=store.anchor().public(),
        allowed_requesters=(REQUESTER,),
        processor_identity=PROCESSOR,
    )
    assert report.ok and report.status is ErasureStatus.COMPLETED, (
        report.failures,
        report.statement,
    )
    assert "  kv-blocks-scrubbed 2\n" in (report.statement or "")
    for key in s_keys:
        assert f'destroyed-key "{key.key_id}"' in (report.statement or "")

    # No node serves S any more; T still reads everywhere.
    for node in d.nodes:
        for _, ns, key in s_writes:
            gone = wait_until(lambda n=node, k=key, ns=ns: served(n, s_token, k, ns) is None, 20)
            assert gone is not None, (node.name, key)
        for _, ns, key in t_writes:
            assert served(node, t_token, key, ns) == f"T:{key}".encode(), (node.name, key)

    # The worker scrubbed S's KV blocks (its evidence is what the processor
    # counted) and left T's alone.
    assert not any(kv_bytes(d.worker, s_blocks)), "S's KV blocks are not zero"
    assert kv_bytes(d.worker, t_blocks) == t_kv
    kv_pool = d.worker.pool.tensor.cpu().contiguous().view(torch.uint8).numpy().tobytes()

    _needles = {"marker": marker} | {f"key {k.key_id}": k.key for k in s_keys}
    for proc in [n.proc for n in d.nodes] + list(d.others.values()):
        hits = memory_hits(proc.pid, _needles)
        print("MEMSCAN", proc.pid, proc.args[4:6], hits, flush=True)
    d.stop()  # every process flushes its logs and closes its RocksDB
    if vault_backend[1] is not None:
        age_out_wal(vault_backend[1])
    held = held_bytes(d) | {"the KV pool": kv_pool}
    # What is searched: both nodes' and the processor's RocksDB files, every log.
    for part in (*NODES, PROCESSOR):
        assert any(where.startswith(str(d.root / part) + "/") for where in held), part
    for log_file in ("erasure.log", "test-process.log", *(f"{n}.stdout" for n in NODES)):
        assert str(d.root / log_file) in held, log_file
    needles = (
        patterns(marker)
        | {f"key {k.key_id}": k.key for k in s_keys}
        | {f"wrapped key {key_id}": wrapped for key_id, wrapped in s_rows}
    )
    found = [
        (what, where) for where, data in held.items() for what, n in needles.items() if n in data
    ]
    assert found == [], found[:10]
    # No key still held anywhere decrypts any of S's ciphertexts.
    still_held = unwrapped(d, vault_rows(d, vault_backend[1])) + keystore_keys(d)
    assert not any(k.key_id.startswith(prefix) for k in still_held)
    assert decrypted(subject_ciphertexts(d, subject_hash), still_held) == 0
