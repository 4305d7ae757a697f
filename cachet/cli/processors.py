"""``cachet processors run``: the watermark ticker and the expiry processor.

One process, one signing identity (``<node.node_id>-processors`` unless
``--identity`` says otherwise), until SIGINT/SIGTERM:

* the ticker emits a sealed WatermarkTick into every partition of
  ``invalidations`` every ``--tick-interval-ms``: nodes serve only while
  they see fresh ticks;
* the expiry processor keeps its own replica of the live view in
  ``<node.data_dir>/view-processors`` and turns every ACTIVE entry past its
  TTL or its contract's max staleness into EXPIRED, read or not.

Keys come from the keystore (``[keys]`` in ``cachet.toml``, the KEK from
``--kek-file``, ``keys.kek_file`` or the ``keys.kek_env`` variable). The
identity must already hold a registered key set: ``cachet keys register
--identity <identity>``.

With ``node.health_port`` set, ``GET /health`` answers 200 (JSON) while
every enabled part runs and the view caught up, 503 otherwise; with
``node.metrics_port`` set, Prometheus metrics are served. Both bind to
127.0.0.1 unless ``--host`` says otherwise: they carry no authentication.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from cachet.cli.context import CliContext, view_failed, wait_for_stop
from cachet.cli.keys import open_keystore
from cachet.errors import CachetError
from cachet.materializers.live_view import LiveView
from cachet.processors.expiry import ExpiryProcessor
from cachet.processors.watermarks import WatermarkTicker, tick_interval_ms
from cachet.producers.cache_node import NodeKeys
from cachet.producers.sealing import LedgerAlerts, SealingProducer
from cachet.schemas.codec import EventCodec
from cachet.topics import Topic

__all__ = ["register"]

log = logging.getLogger(__name__)

VIEW_DIR = "view-processors"


class ProcessorsError(CachetError):
    """The processors cannot start (no keys for the identity, nothing to run)."""


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("processors", parents=[parent], help="run Cachet's stream processors")
    psub = p.add_subparsers(dest="processors_command", metavar="ACTION", required=True)
    r = psub.add_parser(
        "run",
        parents=[parent],
        help="run the watermark ticker and the expiry processor until SIGINT/SIGTERM",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument(
        "--ticker",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the watermark ticker (default: on)",
    )
    r.add_argument(
        "--expiry",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the expiry processor (default: on)",
    )
    r.add_argument(
        "--tick-interval-ms",
        type=int,
        default=None,
        metavar="N",
        help="one tick into every partition each N ms (default: a tenth of the tightest "
        "strict contract's max staleness, within 200 ms..5 s)",
    )
    r.add_argument(
        "--scan-interval-ms",
        type=int,
        default=500,
        metavar="N",
        help="scan the view for expired entries each N ms (default 500)",
    )
    r.add_argument(
        "--identity", default=None, help="signing identity (default <node.node_id>-processors)"
    )
    r.add_argument("--data-dir", type=Path, default=None, help="default node.data_dir")
    r.add_argument("--kek-file", type=Path, default=None, help="key-encryption key file")
    r.add_argument("--host", default="127.0.0.1", help="address of /health and /metrics")
    r.set_defaults(handler=run)
    # `cachet processors erasure` (its own process, identity and view).
    from cachet.cli.erase import register_processor

    register_processor(psub, parent, HealthServer)


def _check_args(args: argparse.Namespace) -> None:
    if not (args.ticker or args.expiry):
        raise ProcessorsError("--no-ticker and --no-expiry: nothing to run")
    if (args.tick_interval_ms is not None and args.tick_interval_ms <= 0) or (
        args.scan_interval_ms <= 0
    ):
        raise ProcessorsError("--tick-interval-ms and --scan-interval-ms must be positive")


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    ctx = CliContext.from_args(args)
    config = ctx.config
    identity = args.identity or f"{config.node.node_id}-processors"
    keys = NodeKeys.from_keystore(open_keystore(ctx, args), identity, config.vault)
    data_dir = args.data_dir or config.node.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    codec = EventCodec()
    producer = SealingProducer.from_config(
        config, ctx.bootstrap_servers, identity, keys.signing, codec=codec
    )
    registry = CollectorRegistry()
    stop = threading.Event()
    parts: dict[str, threading.Thread] = {}
    view: LiveView | None = None
    view_stopped = threading.Event()
    health: HealthServer | None = None
    metrics: Any = None
    try:
        ticker: WatermarkTicker | None = None
        if args.ticker:
            ticker = WatermarkTicker(
                producer,
                config.kafka.partitions_for(Topic.INVALIDATIONS),
                ticker_id=identity,
                interval_s=(
                    args.tick_interval_ms
                    or tick_interval_ms(
                        config.contracts.values(), config.contract_defaults.max_staleness_ms
                    )
                )
                / 1000,
            )
            parts["ticker"] = ticker.start(stop)
            ticks = Gauge(
                "cachet_watermark_tick_seq", "Last tick sequence emitted", registry=registry
            )
            ticks.set_function(lambda: ticker.tick_seq if ticker else 0)
        expiry: ExpiryProcessor | None = None
        if args.expiry:
            view = LiveView.from_config(
                config,
                ctx.bootstrap_servers,
                keys.anchor,
                data_dir / VIEW_DIR,
                alert=LedgerAlerts(producer, f"processors {identity}"),
                codec=codec,
            )
            expiry = ExpiryProcessor(
                view,
                producer,
                config.contracts,
                scan_interval_s=args.scan_interval_ms / 1000,
                registry=registry,
            )
            parts["expiry"] = threading.Thread(
                target=_expire,
                args=(expiry, view, stop, view_stopped),
                name="cachet-expiry",
                daemon=True,
            )
            parts["expiry"].start()
            _view_gauges(view, registry)

        def probe() -> dict[str, Any]:
            problems = [f"{name}_stopped" for name, t in parts.items() if not t.is_alive()]
            out: dict[str, Any] = {"identity": identity, "parts": sorted(parts)}
            if ticker is not None:
                out["tick_seq"] = ticker.tick_seq
            if view is not None and expiry is not None:
                h = view.health()
                if not h.caught_up:
                    problems.append("view_catching_up")
                if h.discontinuity:
                    problems.append(f"log_discontinuity: {view.discontinuity}")
                if h.failed:
                    problems.append(f"view_failed: {view.failure}")
                out.update(
                    caught_up=h.caught_up, lag_ms=h.lag_ms, expiry_in_flight=expiry.in_flight
                )
            # A ticker whose ticks are not acknowledged leaves every node stale.
            problems.extend(f"producer: {p}" for p in producer.problems())
            out.update(ok=not problems, problems=problems)
            return out

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        if config.node.health_port:
            health = HealthServer(args.host, config.node.health_port, probe)
        if config.node.metrics_port:
            metrics, _ = start_http_server(config.node.metrics_port, args.host, registry=registry)
        print(
            f"processors {identity}: {', '.join(sorted(parts))}"
            + (f"; health http://{args.host}:{health.port}/health" if health else "")
            + (f"; metrics :{config.node.metrics_port}" if metrics else ""),
            flush=True,
        )
        wait_for_stop(stop, view_stopped)
    finally:
        stop.set()
        for thread in parts.values():
            thread.join(10)
        if health is not None:
            health.close()
        if metrics is not None:
            metrics.shutdown()
        try:
            if view is not None:
                view.close()
        finally:
            producer.close(10)
    if view is not None and view.failure is not None:
        return view_failed(f"processors {identity}", view.failure)
    print(f"processors {identity} stopped", flush=True)
    return 0


def _expire(
    expiry: ExpiryProcessor, view: LiveView, stop: threading.Event, view_stopped: threading.Event
) -> None:
    expiry.run(stop)  # returns on stop, or when the view stopped for good
    if view.failure is not None:
        view_stopped.set()


def _view_gauges(view: LiveView, registry: CollectorRegistry) -> None:
    caught_up = Gauge(
        "cachet_processors_view_caught_up", "1 once the view reached the log end", registry=registry
    )
    caught_up.set_function(lambda: float(view.health().caught_up))
    lag = Gauge(
        "cachet_processors_view_lag_ms", "How far the view trails the log", registry=registry
    )
    lag.set_function(lambda: view.health().lag_ms)


class HealthServer:
    """``GET /health``: 200 with JSON when ``probe`` says ok, else 503."""

    def __init__(self, host: str, port: int, probe: Callable[[], dict[str, Any]]) -> None:
        handler = type("Handler", (_HealthHandler,), {"probe": staticmethod(probe)})
        self._server = ThreadingHTTPServer((host, port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="cachet-processors-health", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _HealthHandler(BaseHTTPRequestHandler):
    probe: Callable[[], dict[str, Any]]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("health: " + format, *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path != "/health":
            code, body = 404, {"error": f"no such path {self.path}"}
        else:
            body = self.probe()
            code = 200 if body["ok"] else 503
        raw = json.dumps(body, sort_keys=True).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)
