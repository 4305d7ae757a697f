"""The public facade: ``cachet.open(...)`` and the :class:`Cache` handle.

What a service needs to cache regulated data, in one call::

    import cachet

    with cachet.open("cachet.toml", contract="finra_quotes", wait_ready=True) as cache:
        cache.put("AAPL", b"189.12")
        r = cache.get("AAPL")          # a CacheResponse: value, freshness, signatures

:func:`open` loads the configuration, unlocks the keystore, starts a
:class:`~cachet.producers.cache_node.CacheNode` (this process's replica of
the live view) and, when asked, waits until the node may serve. The
:class:`Cache` it returns is bound to one role, one scope, a default
contract and a namespace, so calls do not repeat them; :meth:`Cache.bound`
and :meth:`Cache.as_role` give other handles on the same node.

This module sits at the top of the import layers, next to the CLI: it may
import everything below it, and nothing below imports it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from cachet.config import CachetConfig, ContractConfig
from cachet.config.enums import Role
from cachet.config.load import resolve_config
from cachet.crypto.keystore import Keystore, KeystoreError, open_keystore
from cachet.errors import CachetError
from cachet.kafka.control import register_key_set
from cachet.kafka.settings import use_security
from cachet.producers.cache_client import (
    CacheClient,
    CacheError,
    CacheResponse,
    InvalidArgument,
    PutReceipt,
    UnknownContract,
)
from cachet.producers.cache_node import CacheNode, NodeHealth, NodeKeys
from cachet.producers.erasure_request import DEFAULT_LEGAL_BASIS, ErasureTicket, request_erasure
from cachet.producers.fingerprint import Computation

__all__ = ["Cache", "CacheClosed", "NotReady", "open"]

log = logging.getLogger(__name__)


class NotReady(CachetError):
    """The node did not become ready within ``timeout_s``.

    ``problems`` are what it still waited for, as ``/health`` reports them
    (``view_catching_up: ...``, ``no_watermark_tick: ...``,
    ``watermark_stale: ...``, ``producer: ...``). The node was closed.
    """

    def __init__(self, node_id: str, timeout_s: float, problems: tuple[str, ...]) -> None:
        super().__init__(
            f"node {node_id} not ready after {timeout_s:g}s; still waiting for: "
            + "; ".join(problems)
        )
        self.node_id = node_id
        self.timeout_s = timeout_s
        self.problems = problems


class CacheClosed(CacheError):
    """A call on a handle whose node was closed."""


class _NodeLease:
    """The node every handle of one :func:`open` shares, and whether it is closed."""

    def __init__(self, node: CacheNode) -> None:
        self.node = node
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.node.close()
            finally:
                # open() opened the node's key vault: it closes it too.
                self.node.keys.vault.close()


class Cache:
    """The cache as one role and scope sees it, bound to a default contract
    and namespace.

    Made by :func:`open` (which owns the node: closing that handle, or
    leaving its ``with`` block, stops the node) or derived from another
    handle with :meth:`bound` or :meth:`as_role` (sharing the node; closing a
    derived handle does nothing). Every method is the
    :class:`~cachet.producers.cache_client.CacheClient` call of the same
    name with ``contract`` and ``namespace`` filled in; bad arguments raise
    :class:`~cachet.producers.cache_client.InvalidArgument` naming the
    argument before anything is emitted.
    """

    def __init__(
        self,
        lease: _NodeLease,
        *,
        role: Role,
        scope: str | None,
        contract: str | None,
        namespace: str,
        owns_node: bool,
    ) -> None:
        _check_binding(lease.node.contracts, contract, namespace, role)
        self._lease = lease
        self._client = CacheClient(lease.node, role, scope)
        self._contract = contract
        self._namespace = namespace
        self._owns_node = owns_node

    # -- what this handle is bound to ---------------------------------------

    @property
    def role(self) -> Role:
        """The role every call of this handle is made (and audited) as."""
        return self._client.role

    @property
    def scope(self) -> str | None:
        """The tenant or subject scope of this handle (None: unscoped)."""
        return self._client.scope

    @property
    def contract(self) -> str | None:
        """The contract every call is evaluated against (None: not bound)."""
        return self._contract

    @property
    def namespace(self) -> str:
        """The namespace keys live in (it also selects the data key)."""
        return self._namespace

    @property
    def node_id(self) -> str:
        """The identity of the node this handle reads from and writes through."""
        return self._lease.node.node_id

    def bound(self, *, contract: str | None = None, namespace: str | None = None) -> Cache:
        """Another handle on the same node and role, bound to ``contract``
        and/or ``namespace`` (each one left out keeps this handle's)."""
        return self._derive(self.role, self.scope, contract, namespace)

    def as_role(self, role: Role, scope: str | None = None) -> Cache:
        """A handle for ``role`` (and ``scope``) on the same node, contract
        and namespace. A Regulator or Auditor handle gets proofs and metadata
        only: its responses never carry the value."""
        return self._derive(role, scope, None, None)

    def _derive(
        self, role: Role, scope: str | None, contract: str | None, namespace: str | None
    ) -> Cache:
        self._check_open()
        return Cache(
            self._lease,
            role=role,
            scope=scope,
            contract=contract if contract is not None else self._contract,
            namespace=namespace if namespace is not None else self._namespace,
            owns_node=False,
        )

    def _bound_contract(self) -> str:
        self._check_open()
        if self._contract is None:
            known = ", ".join(sorted(self._lease.node.contracts)) or "none configured"
            raise InvalidArgument(
                "contract",
                "this handle is bound to no contract: pass contract= to cachet.open() or "
                f"use cache.bound(contract=...) (known: {known})",
            )
        return self._contract

    def _check_open(self) -> None:
        if self._lease.closed:
            raise CacheClosed(f"the cache of node {self.node_id} is closed")

    # -- reads ----------------------------------------------------------------

    def get(self, key: str, *, computation: Computation | None = None) -> CacheResponse:
        """Read ``key`` and evaluate the bound contract; every read is
        audited. A hit carries the value (Owner role only), the freshness
        proof and the signature summary; a miss carries the
        :class:`~cachet.verdict.MissReason`. ``computation``: also require
        the entry's fingerprint to match this computation."""
        return self._client.get(
            key, contract=self._bound_contract(), namespace=self._namespace, computation=computation
        )

    def get_or_compute(
        self,
        key: str,
        compute: Callable[[], bytes],
        *,
        ttl_ms: int | None = None,
        computation: Computation | None = None,
    ) -> CacheResponse:
        """A hit, or: call ``compute()``, write its value as the new version
        (durable when this returns) and return it with ``computed=True`` and
        the reason the cache missed."""
        return self._client.get_or_compute(
            key,
            compute,
            contract=self._bound_contract(),
            namespace=self._namespace,
            computation=computation,
            ttl_ms=ttl_ms,
        )

    # -- writes ---------------------------------------------------------------

    def put(
        self,
        key: str,
        value: bytes,
        *,
        ttl_ms: int | None = None,
        computation: Computation | None = None,
        wait: bool = True,
        timeout_s: float = 10.0,
    ) -> PutReceipt:
        """Write ``value`` as the new version of ``key`` (the previous one
        becomes Superseded). Returns once the broker acknowledged it
        (acks=all): the receipt is durable. ``ttl_ms``: the entry expires
        after this many milliseconds (None: the contract decides).
        ``wait`` (default True): also wait until this node serves the new
        version, so a ``get`` right after sees it; False returns at the
        acknowledgement. ``timeout_s`` bounds the whole call."""
        return self._client.put(
            key,
            value,
            contract=self._bound_contract(),
            namespace=self._namespace,
            computation=computation,
            ttl_ms=ttl_ms,
            wait=wait,
            timeout_s=timeout_s,
        )

    def revoke(self, key: str, *, reason: str = "revoked", timeout_s: float = 10.0) -> bool:
        """Revoke the current version of ``key`` on every node (a signed
        StateTransitioned plus an eager Invalidated). True once the broker
        acknowledged both; False when there was no active version."""
        self._check_open()
        return self._client.revoke(
            key, namespace=self._namespace, reason=reason, timeout_s=timeout_s
        )

    def confirm_freshness(self, key: str, *, timeout_s: float = 10.0) -> bool:
        """The source confirms the current value of ``key`` is still right
        (contracts with contractual invalidation). True once the broker
        acknowledged the confirmation; False when there was no active
        version."""
        self._check_open()
        return self._client.confirm_freshness(key, namespace=self._namespace, timeout_s=timeout_s)

    def erase(
        self,
        subject: str,
        *,
        namespace: str | None = None,
        legal_basis: str = DEFAULT_LEGAL_BASIS,
        requested_by: str | None = None,
        timeout_s: float = 10.0,
    ) -> ErasureTicket:
        """Request the erasure of a data subject (every namespace, or only
        ``namespace``): a sealed ErasureRequested, returned once the broker
        acknowledged it. Only a handle of role ``DATA_PROTECTION`` may ask,
        and the erasure processor acts only when this node's identity is in
        ``[erasure] allowed_requesters`` (else it refuses and alerts).
        ``subject`` is hashed as a client's subject scope is; it never
        leaves this process."""
        self._check_open()
        if self.role is not Role.DATA_PROTECTION:
            raise CacheError(f"{self.role.value} may not erase: only the data_protection role")
        node = self._lease.node
        return request_erasure(
            node.producer,
            node.hasher,
            subject,
            namespace=namespace,
            requested_by=requested_by or node.keys.identity,
            legal_basis=legal_basis,
            timeout_s=timeout_s,
        )

    # -- the node -------------------------------------------------------------

    def health(self) -> NodeHealth:
        """The node's health now: ready, and the problems when it is not."""
        self._check_open()
        return self._lease.node.health()

    def close(self) -> None:
        """Stop the node (flush the read audit and the sealing producer,
        close the view) if this handle opened it; idempotent. Closing a
        handle made by :meth:`bound` or :meth:`as_role` does nothing."""
        if self._owns_node:
            self._lease.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Cache(node_id={self.node_id!r}, role={self.role.value}, scope={self.scope!r}, "
            f"contract={self._contract!r}, namespace={self._namespace!r})"
        )


def open(  # shadows the builtin here only: `cachet.open` is the entry point
    config: str | Path | CachetConfig | None = None,
    *,
    contract: str | None = None,
    namespace: str = "default",
    role: Role = Role.OWNER,
    scope: str | None = None,
    bootstrap_servers: str | None = None,
    node_id: str | None = None,
    data_dir: str | Path | None = None,
    kek_file: str | Path | None = None,
    register: bool = False,
    wait_ready: bool = False,
    ready_timeout_s: float = 60.0,
) -> Cache:
    """Start a cache node in this process and return a handle to it.

    Use it as a context manager (``with cachet.open(...) as cache:``) or call
    :meth:`Cache.close` when done: the node runs a background thread, a
    sealing producer and a RocksDB view until then.

    :param config: the configuration: a path to a ``cachet.toml``, or an
        already loaded :class:`~cachet.config.CachetConfig`. Default: the file
        named by ``$CACHET_CONFIG``, else ``./cachet.toml`` when it exists,
        else the built-in defaults.
    :param contract: the contract every call of the handle is evaluated
        against (a name under ``[contracts]``). Default: the only contract
        when the configuration defines exactly one, else none (bind one later
        with :meth:`Cache.bound`). An unknown name raises
        :class:`~cachet.producers.cache_client.UnknownContract` at once.
    :param namespace: the namespace keys live in; it also selects the data
        key values are encrypted under. Default ``"default"``.
    :param role: the role the handle reads and writes as. Default
        ``Role.OWNER``, the only role that writes and sees values; use
        :meth:`Cache.as_role` for others on the same node.
    :param scope: the tenant or subject scope of the handle (None: unscoped).
    :param bootstrap_servers: the Kafka bootstrap servers (``host:port,...``).
        Default: ``kafka.bootstrap_servers`` of the configuration, overridden
        by ``$CACHET_BOOTSTRAP_SERVERS`` when the configuration was read from
        a file (as the CLI does).
    :param node_id: this node's identity: its signing key set in the keystore
        and its producer id in the ledger. Default ``node.node_id``.
    :param data_dir: where the node keeps its view replica (created if
        missing). Default ``node.data_dir``.
    :param kek_file: the file holding the keystore's key-encryption key.
        Default ``keys.kek_file``, else the environment variable named by
        ``keys.kek_env`` (``$CACHET_KEK``).
    :param register: when the keystore holds no key set for ``node_id``,
        create one and register it on the control topic, signed by the trust
        anchor (as ``cachet node run --register`` does). Default False: a
        missing key set raises :class:`~cachet.crypto.keystore.KeystoreError`
        naming the command that creates it.
    :param wait_ready: wait until the node may serve before returning: its
        view caught up with the log, a recent watermark tick arrived in every
        partition, and its producer gets writes acknowledged (what ``/health``
        calls ready). Default False: reads miss with ``view_catching_up`` or
        ``view_stale`` until then.
    :param ready_timeout_s: how long ``wait_ready`` waits before the node is
        closed and :class:`NotReady` is raised, naming what it still waited
        for. Default 60 seconds.
    :return: a :class:`Cache` that owns the node.
    :raises ConfigError: the configuration file is invalid (naming the key).
    :raises KeystoreError: the keystore or its KEK cannot be read, or the
        node has no key set and ``register`` is False.
    """
    if isinstance(ready_timeout_s, bool) or not isinstance(ready_timeout_s, int | float):
        raise InvalidArgument("ready_timeout_s", f"must be a number, got {ready_timeout_s!r}")
    if ready_timeout_s <= 0:
        raise InvalidArgument("ready_timeout_s", f"must be > 0 seconds, got {ready_timeout_s!r}")
    if isinstance(config, CachetConfig):
        # A config object the caller built is taken as it is: the environment
        # never overrides it (only an explicit bootstrap_servers does).
        cfg = config
        if bootstrap_servers:
            cfg = replace(cfg, kafka=replace(cfg.kafka, bootstrap_servers=bootstrap_servers))
    else:
        cfg, _ = resolve_config(config, bootstrap_servers, os.environ)
    # Every Kafka client of this process for these servers gets the deployment's SASL/TLS.
    use_security(cfg.kafka.bootstrap_servers, cfg.kafka.security)
    # Every argument checked before keys are touched or a node starts.
    _check_binding(cfg.contracts, contract, namespace, role)
    if contract is None and len(cfg.contracts) == 1:
        contract = next(iter(cfg.contracts))
    identity = node_id or cfg.node.node_id
    store = _open_keystore(cfg, Path(kek_file) if kek_file is not None else None)
    if register:
        _register_if_missing(cfg, store, identity)
    keys = NodeKeys.from_keystore(store, identity, cfg.vault)
    directory = Path(data_dir) if data_dir is not None else cfg.node.data_dir
    directory.mkdir(parents=True, exist_ok=True)
    try:
        node = CacheNode(cfg, cfg.kafka.bootstrap_servers, keys, directory, node_id=identity)
    except BaseException:
        keys.vault.close()
        raise
    lease = _NodeLease(node)
    try:
        cache = Cache(
            lease, role=role, scope=scope, contract=contract, namespace=namespace, owns_node=True
        )
        if wait_ready:
            _wait_ready(lease.node, ready_timeout_s)
    except BaseException:
        # A handle the caller never receives must not leave a node running.
        lease.close()
        raise
    return cache


def _check_binding(
    contracts: Mapping[str, ContractConfig], contract: str | None, namespace: str, role: Role
) -> None:
    """Refuse a handle bound to a contract the configuration does not
    define, an empty namespace or a role that is not a :class:`Role`."""
    if contract is not None and contract not in contracts:
        known = ", ".join(sorted(contracts)) or "none configured"
        raise UnknownContract("contract", f"unknown contract {contract!r} (known: {known})")
    if not isinstance(namespace, str) or not namespace:
        raise InvalidArgument("namespace", f"must be a non-empty str, got {namespace!r}")
    if not isinstance(role, Role):
        raise InvalidArgument("role", f"must be a cachet.Role, got {type(role).__name__}")


def _open_keystore(config: CachetConfig, kek_file: Path | None) -> Keystore:
    """The configured keystore, unlocked with the KEK from ``kek_file``,
    ``keys.kek_file`` or the variable ``keys.kek_env`` names (in that order)."""
    keys = config.keys
    return open_keystore(keys.keystore_path, kek_file or keys.kek_file, keys.kek_env, os.environ)


def _register_if_missing(config: CachetConfig, store: Keystore, identity: str) -> None:
    """Create and register a key set for ``identity`` unless it has one."""
    try:
        store.key_set(identity)
        return
    except KeystoreError:
        pass
    keys = register_key_set(
        config.kafka.bootstrap_servers, config.kafka.topic_names(), store, identity
    )
    log.info("registered key set %s for %s", keys.key_set_id, identity)


def _wait_ready(node: CacheNode, timeout_s: float) -> None:
    """Return once ``node.health()`` is ready; raise :class:`NotReady` with
    its last problems after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        health = node.health()
        if health.ready:
            return
        if time.monotonic() >= deadline:
            raise NotReady(node.node_id, timeout_s, health.problems)
        time.sleep(0.05)
