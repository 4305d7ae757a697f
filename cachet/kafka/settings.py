"""Kafka client settings and topic provisioning, shared by every process.

The settings are visible dicts, each non-obvious key explained, so a reader
can see exactly what guarantees a producer or consumer was given.

Security (SASL/TLS) comes from ``[kafka]`` of ``cachet.toml``
(:class:`~cachet.config.kafka_security.KafkaSecurity`): a process calls
:func:`use_security` once with its configuration, and from then on every
producer, consumer and admin client it builds for those bootstrap servers
carries the same ``security.protocol``, ``sasl.*`` and ``ssl.*`` settings.
Every client in Cachet is built from :func:`producer_settings`,
:func:`consumer_settings` or :func:`admin_client`, so none can be left out.
The SASL password is read from the environment variable the configuration
names, when a client is built; it is never logged.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from cachet.config.kafka_security import KafkaSecurity, KafkaSecurityProtocol
from cachet.config.sections import (
    DEFAULT_INVALIDATION_FETCH_WAIT_MS,
    DEFAULT_VIEW_FETCH_WAIT_MS,
)
from cachet.errors import CachetError
from cachet.ratelimit import RateLimiter
from cachet.topics import Topic, TopicNames

__all__ = [
    "LISTENER_FETCH_WAIT_MS",
    "VIEW_FETCH_WAIT_MS",
    "MAX_RECORD_BYTES",
    "KafkaSetupError",
    "LibrdkafkaLog",
    "admin_client",
    "consumer_settings",
    "create_topics",
    "producer_settings",
    "security_settings",
    "use_security",
]

log = logging.getLogger(__name__)

# Fetch waits on the embedded broker (Tansu 0.6). Its fetch handler reads
# every requested partition when a fetch arrives and, when nothing is there,
# sleeps out the whole wait and reads them all again (waits of 250 ms and
# more are cut in halves, with a read after each): it never answers early
# when a record arrives in between. So a consumer's fetch wait is both its
# latency floor (a record waits up to one wait) and its idle cost, which is
# those reads: per second, partitions x 2 / wait. Measured here (2 cores),
# broker CPU for one idle consumer, as a share of one core:
#   invalidations (3 partitions)          wait 5: 7.3%, 10: 5.7%, 20: 3.8%
#   a view's 5 topics (15 partitions)     wait 50: 7.2%, 100: 4.0%, 200: 2.3%, 500: 1.0%
# and produce (linger.ms=0) to consume: wait 10 ms p50 3 ms, max 6-7 ms.
# Apache Kafka answers a waiting fetch as soon as data arrives, so there a
# long wait costs neither latency nor CPU.
#
# The invalidation listener ([kafka] invalidation_fetch_wait_ms, default
# 10 ms): the floor of revoke latency between nodes. At 10 ms a revoke
# between two node processes takes p50 6-7 ms, p99 18-24 ms on a quiet
# 2-core host (cachet bench invalidation), the listener's sighting at most
# ~18 ms of it. It is the larger part of an idle node's cost to the
# embedded broker (cachet bench idle: ~5% of a core of ~10%), and there it
# cannot be made cheaper without making revokes slower.
LISTENER_FETCH_WAIT_MS = DEFAULT_INVALIDATION_FETCH_WAIT_MS
# The live view ([kafka] view_fetch_wait_ms, default 100 ms): what a new
# version (and its seal) waits before another node's view applies it, and
# what a watermark tick (and its seal) waits before a node counts it. The
# tick interval is at least 200 ms for windows of at least 2 s
# (cachet.processors.watermarks), so a tick seen up to two waits late still
# leaves most of the window; eager invalidations do not wait on it.
VIEW_FETCH_WAIT_MS = DEFAULT_VIEW_FETCH_WAIT_MS

# A Seal with 1k leaf hashes and three signatures is ~55 KB; a cached value
# may be larger. librdkafka's default (1,000,000) is just under 1 MB of value
# once headers and framing are added, so we raise it.
MAX_RECORD_BYTES = 4 * 1024 * 1024


# librdkafka's own log lines go through Python logging (not raw stderr), so
# processes and tests decide what to show.
_LIBRDKAFKA_LOG = logging.getLogger("librdkafka")

# Error codes that mean "cannot reach the broker" (error_cb), and the log
# facility librdkafka uses for each failed connection attempt.
_UNREACHABLE_CODES = frozenset(
    {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE}
)
_CONNECT_FAIL_FACILITY = "FAIL"
# One summary line per window while a broker stays unreachable.
UNREACHABLE_SUMMARY_S = 30.0
# What librdkafka says when the broker refuses this client's credentials
# (SASL) or the TLS handshake fails: not "unreachable", a configuration error.
_AUTH_FAILURE_MARKERS = (
    "SASL authentication error",
    "SSL handshake failed",
    "Authentication failed",
)


class LibrdkafkaLog:
    """librdkafka's log lines and error callbacks, into Python logging without a flood.

    Without a broker every client retries its connection several times a
    second and says so at ERROR: a node logged ~22 lines a second, forever.
    Here the first failed attempt is one clear ERROR ("broker X
    unreachable: ..."), and while failures go on one WARNING per
    ``window_s`` counts them. Other warnings and errors are limited to a few
    per ``window_s`` per facility or error code, with a count of what was
    held back; fatal errors always pass. One instance serves every client of
    a process that talks to the same bootstrap servers (:func:`librdkafka_log`).

    It is both the ``logger`` (librdkafka calls ``log(level, fmt, *args)``)
    and, through :meth:`error`, the ``error_cb`` of the client settings.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        logger: logging.Logger = _LIBRDKAFKA_LOG,
        *,
        window_s: float = UNREACHABLE_SUMMARY_S,
        per_window: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._log = logger
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._unreachable_since: float | None = None
        self._window_start = 0.0
        self._failures = 0
        self._others: RateLimiter[str, str] = RateLimiter(per_window, window_s, clock)
        self._auth_failure: tuple[float, str] | None = None

    @property
    def auth_failure(self) -> str | None:
        """librdkafka's last word on refused credentials or a failed TLS handshake
        within the last window, if any (older refusals no longer explain anything)."""
        with self._lock:
            if self._auth_failure is None:
                return None
            at, detail = self._auth_failure
            return detail if self._clock() - at <= self._window_s else None

    # -- the logging.Logger interface librdkafka uses --------------------

    def log(self, level: int, msg: str, *args: Any) -> None:
        """One librdkafka log line (``"%s [%s] %s"``: facility, client, text)."""
        facility = str(args[0]) if args else ""
        if facility == _CONNECT_FAIL_FACILITY and level >= logging.WARNING:
            detail = str(args[-1]) if args else msg
            if any(marker in detail for marker in _AUTH_FAILURE_MARKERS):
                self.refused(detail)
            else:
                self.unreachable(detail)
            return
        if level < logging.WARNING:
            self._log.log(level, msg, *args)
            return
        self._limited(f"log:{facility}", level, msg % args if args else msg)

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging.Logger's name
        return self._log.isEnabledFor(level)

    # -- error_cb --------------------------------------------------------

    def error(self, err: KafkaError) -> None:
        """librdkafka's error callback: client-wide errors, not per record."""
        if err.fatal():
            # The client is unusable from here on: never held back.
            self._log.error("fatal client error (%s): %s", err.name(), err.str())
        elif err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
            self.refused(err.str())
        elif err.code() in _UNREACHABLE_CODES:
            self.unreachable(err.str())
        else:
            self._limited(f"error:{err.name()}", logging.ERROR, f"{err.name()}: {err.str()}")

    def unreachable(self, detail: str) -> None:
        """A failed attempt to reach the broker: one ERROR, then a count per window."""
        first = due = False
        count = 0
        with self._lock:
            now = self._clock()
            if self._unreachable_since is None:
                self._unreachable_since = self._window_start = now
                first = True
            else:
                self._failures += 1
                due = now - self._window_start >= self._window_s
                if due:
                    count, self._failures, self._window_start = self._failures, 0, now
        if first:
            self._log.error(
                "broker %s unreachable: %s (retrying; further failures are counted every %gs)",
                self.bootstrap_servers,
                detail,
                self._window_s,
            )
        elif due:
            self._log.warning(
                "broker %s still unreachable: %d more failed attempts in the last %gs; last: %s",
                self.bootstrap_servers,
                count,
                self._window_s,
                detail,
            )

    def refused(self, detail: str) -> None:
        """The broker refused this client's credentials (or TLS failed): one ERROR per window."""
        with self._lock:
            self._auth_failure = (self._clock(), detail)
        self._limited(
            "refused",
            logging.ERROR,
            f"broker {self.bootstrap_servers} refused this client: {detail} "
            "(check kafka.security_protocol, kafka.sasl_username, the variable named by "
            "kafka.sasl_password_env, and kafka.ssl_*)",
        )

    def _limited(self, key: str, level: int, text: str) -> None:
        admitted, closed = self._others.admit(key, text)
        if closed is not None:
            self._log.warning(
                "%d more librdkafka %s lines suppressed in %gs; last: %s",
                closed.count,
                key,
                closed.window_s,
                closed.last,
            )
        if admitted:
            self._log.log(level, "%s", text)


_BRIDGES: dict[str, LibrdkafkaLog] = {}
_BRIDGES_LOCK = threading.Lock()


def librdkafka_log(bootstrap_servers: str) -> LibrdkafkaLog:
    """The process's one :class:`LibrdkafkaLog` for these bootstrap servers."""
    with _BRIDGES_LOCK:
        bridge = _BRIDGES.get(bootstrap_servers)
        if bridge is None:
            bridge = _BRIDGES[bootstrap_servers] = LibrdkafkaLog(bootstrap_servers)
        return bridge


def _logging(bootstrap_servers: str) -> dict[str, Any]:
    bridge = librdkafka_log(bootstrap_servers)
    return {"logger": bridge, "error_cb": bridge.error}


class KafkaSetupError(CachetError):
    """The broker refused or could not be reached for an administrative step,
    or the client's security settings cannot be used (the message names the key)."""


@dataclass(frozen=True, slots=True)
class _Security:
    security: KafkaSecurity
    environ: Mapping[str, str]


_SECURITY: dict[str, _Security] = {}
_SECURITY_LOCK = threading.Lock()


def use_security(
    bootstrap_servers: str, security: KafkaSecurity, environ: Mapping[str, str] | None = None
) -> None:
    """Every client this process builds for ``bootstrap_servers`` gets ``security``.

    Called once where the configuration is loaded (the CLI, ``cachet.open``).
    The password is looked up in ``environ`` (the process environment by
    default) each time a client is built, so a command that never talks to
    Kafka does not need it; a missing one is a :class:`KafkaSetupError`
    naming ``kafka.sasl_password_env`` then.
    """
    with _SECURITY_LOCK:
        _SECURITY[bootstrap_servers] = _Security(
            security, os.environ if environ is None else environ
        )


def _require_file(key: str, path: object) -> str:
    text = str(path)
    if not os.path.isfile(text):
        raise KafkaSetupError(f"kafka.{key}: {text} is not a readable file")
    return text


def security_settings(
    security: KafkaSecurity, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The librdkafka settings for ``security``; KafkaSetupError naming the key if unusable."""
    if security.protocol is KafkaSecurityProtocol.PLAINTEXT:
        return {}
    settings: dict[str, Any] = {"security.protocol": security.protocol.value}
    if security.protocol.sasl:
        env = os.environ if environ is None else environ
        variable = security.sasl_password_env or ""
        password = env.get(variable)
        if not password:
            raise KafkaSetupError(
                f"kafka.sasl_password_env: the environment variable {variable} holding the "
                f"SASL password of {security.sasl_username} is not set"
            )
        # Config validation guarantees a mechanism and a username with SASL.
        settings["sasl.mechanism"] = str(security.sasl_mechanism)
        settings["sasl.username"] = security.sasl_username
        settings["sasl.password"] = password
    if security.protocol.tls:
        # Verify the broker's certificate and its host name (librdkafka's
        # default since 1.9; spelled out so no override can quietly drop it).
        settings["enable.ssl.certificate.verification"] = True
        settings["ssl.endpoint.identification.algorithm"] = "https"
        if security.ssl_ca_file is not None:
            settings["ssl.ca.location"] = _require_file("ssl_ca_file", security.ssl_ca_file)
        if security.ssl_cert_file is not None:
            settings["ssl.certificate.location"] = _require_file(
                "ssl_cert_file", security.ssl_cert_file
            )
        if security.ssl_key_file is not None:
            settings["ssl.key.location"] = _require_file("ssl_key_file", security.ssl_key_file)
    return settings


def _security(bootstrap_servers: str) -> dict[str, Any]:
    with _SECURITY_LOCK:
        registered = _SECURITY.get(bootstrap_servers)
    if registered is None:
        return {}
    return security_settings(registered.security, registered.environ)


def producer_settings(
    bootstrap_servers: str, overrides: Mapping[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """Settings for every Cachet producer: exactly-once per partition."""
    settings: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        # Idempotence: the broker drops retried duplicates, so a network retry
        # cannot put one event into the ledger twice (it implies acks=all).
        "enable.idempotence": True,
        "acks": "all",
        # No batching window: an event leaves as soon as the client's thread
        # takes it (under load, what queues behind a request in flight is
        # batched anyway). An eager invalidation or a sync read audit waits
        # for its acknowledgement, and a window would be added to each; the
        # writes bench measured no throughput difference between 0 and 2 ms.
        "linger.ms": 0,
        "message.max.bytes": MAX_RECORD_BYTES,
        **_logging(bootstrap_servers),
    }
    settings.update(overrides or {})
    settings.update(extra)
    # Last: the deployment's credentials are not something a caller overrides.
    settings.update(_security(bootstrap_servers))
    return settings


def consumer_settings(
    bootstrap_servers: str,
    group_id: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Settings for every Cachet consumer.

    Offsets are never auto-committed: a consumer that materializes state
    stores its position with that state (one WriteBatch), and one that
    does not commits only after it handled the record.
    """
    settings: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        # librdkafka needs a group id even for assign()-only consumers; it is
        # not used for coordination unless subscribe() is called.
        "group.id": group_id or "cachet-assign-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # The embedded broker's group join takes ~session.timeout.ms/2.
        "session.timeout.ms": 6000,
        "fetch.max.bytes": 2 * MAX_RECORD_BYTES,
        "max.partition.fetch.bytes": MAX_RECORD_BYTES,
        # Surface the end of a partition: "caught up" is defined by it.
        "enable.partition.eof": True,
        # How long the broker may hold an empty fetch: on the embedded
        # broker both a consumer's latency floor and its idle cost (the
        # figures above). 50 ms for the short-lived and batch consumers
        # built here; a node's live view and invalidation listener set their
        # own from [kafka] (VIEW_FETCH_WAIT_MS, LISTENER_FETCH_WAIT_MS).
        "fetch.wait.max.ms": 50,
        **_logging(bootstrap_servers),
    }
    settings.update(overrides or {})
    settings.update(extra)
    settings.update(_security(bootstrap_servers))
    return settings


def admin_client(bootstrap_servers: str) -> AdminClient:
    """An admin client for ``bootstrap_servers``, with the process's security settings."""
    settings: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        **_logging(bootstrap_servers),
        **_security(bootstrap_servers),
    }
    return AdminClient(settings)


def _refusal(bootstrap_servers: str, admin: AdminClient) -> str:
    """Why the broker refused this client, as a suffix for an error message ("" if it did not)."""
    # librdkafka hands its log lines and error callbacks over on poll(); the
    # futures an admin call waits on do not poll.
    admin.poll(0)
    refused = librdkafka_log(bootstrap_servers).auth_failure
    return f" (the broker refused this client's credentials: {refused})" if refused else ""


def create_topics(
    bootstrap_servers: str,
    names: TopicNames,
    partitions: int | Mapping[Topic, int] = 3,
    replication_factor: int = 1,
    timeout_s: float = 15.0,
) -> dict[str, str]:
    """Create every Cachet topic; already existing ones are fine.

    Returns ``{topic name: "created" | "exists"}``.
    """

    def count(t: Topic) -> int:
        return partitions if isinstance(partitions, int) else partitions.get(t, 3)

    admin = admin_client(bootstrap_servers)
    new = [NewTopic(names(t), count(t), replication_factor) for t in Topic]
    outcome: dict[str, str] = {}
    try:
        futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaSetupError(
            f"cannot create topics on {bootstrap_servers}: {exc}{_refusal(bootstrap_servers, admin)}"
        ) from exc
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            outcome[name] = "created"
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                outcome[name] = "exists"
                continue
            raise KafkaSetupError(
                f"cannot create topic {name} on {bootstrap_servers}: {exc}"
                f"{_refusal(bootstrap_servers, admin)}"
            ) from exc
        except concurrent.futures.TimeoutError as exc:
            why = _refusal(bootstrap_servers, admin) or " (broker unreachable?)"
            raise KafkaSetupError(
                f"cannot create topic {name} on {bootstrap_servers}: no answer within "
                f"{timeout_s:g}s{why}"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - named in the error, never swallowed
            raise KafkaSetupError(
                f"cannot create topic {name} on {bootstrap_servers}: {exc or type(exc).__name__}"
            ) from exc
    log.info("topics on %s: %s", bootstrap_servers, outcome)
    return outcome
