"""The watermark ticker: a signed heartbeat in every partition of ``invalidations``.

A node serves from its view only while it has seen, in every partition, a
tick newer than the contract's window. Ticks are ordinary sealed events, so
a node cut off from the broker (or one whose ticker stopped) stops seeing
fresh ticks and fails closed with ``view_stale`` instead of serving data it
can no longer prove fresh.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from cachet.clock import SYSTEM_CLOCK, Clock
from cachet.config import ContractConfig
from cachet.producers.sealing import SealingProducer
from cachet.schemas.events import EventType

__all__ = ["WatermarkTicker", "tick_interval_ms"]

log = logging.getLogger(__name__)

MIN_TICK_INTERVAL_MS = 200
MAX_TICK_INTERVAL_MS = 5_000


def tick_interval_ms(contracts: Iterable[ContractConfig], default_max_staleness_ms: int) -> int:
    """How often to tick: a tenth of the tightest strict contract's window,
    within [200 ms, 5 s].

    A node serves a strict contract only while its newest tick is younger
    than the contract's max staleness, so ticks must come several times per
    window (a tick also waits for its seal). More often only costs: every
    tick round is a triple-signed seal, milliseconds of CPU, which on an
    idle deployment is most of what it does.
    """
    windows = [c.max_staleness_ms for c in contracts if c.strict]
    tightest = min(windows, default=default_max_staleness_ms)
    return max(MIN_TICK_INTERVAL_MS, min(MAX_TICK_INTERVAL_MS, tightest // 10))


class WatermarkTicker:
    """Emits one WatermarkTick into each partition per interval.

    ``clock`` stamps each tick (``emitted_at_us``, wall clock).
    """

    def __init__(
        self,
        producer: SealingProducer,
        partitions: int,
        *,
        ticker_id: str,
        interval_s: float = 0.2,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._producer = producer
        self._clock = clock
        self._partitions = partitions
        self.ticker_id = ticker_id
        self.interval_s = interval_s
        self.tick_seq = 0

    def tick(self) -> None:
        """One tick into every partition (the event time is the tick's time)."""
        self.tick_seq += 1
        for partition in range(self._partitions):
            self._producer.emit(
                EventType.WATERMARK_TICK,
                {
                    "ticker_id": self.ticker_id,
                    "partition": partition,
                    "tick_seq": self.tick_seq,
                    "emitted_at_us": self._clock.now_us(),
                },
                partition=partition,
            )

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a missed tick fails nodes closed; keep ticking
                log.exception("ticker %s: tick %d failed", self.ticker_id, self.tick_seq)
            stop.wait(self.interval_s)

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="cachet-ticker", daemon=True)
        thread.start()
        return thread
