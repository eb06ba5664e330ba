"""What a run looked like over time: samples of the market, a few per second.

The runner samples the market's books on a timer (never per operation, so
watching costs nothing measurable) and keeps them in a ``Timeline``; the live
view draws the latest sample and the HTML report draws them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SAMPLE_INTERVAL_S", "Sample", "Timeline"]

# How often a run samples the market: often enough for a smooth live view and
# charts, rarely enough that the extra round trip is lost in the noise.
SAMPLE_INTERVAL_S = 0.25


@dataclass(frozen=True)
class Sample:
    """One look at the market, ``t`` seconds after the start barrier opened."""

    t: float
    bought: int  # products in placed orders so far (this run's consumers)
    orders: int  # orders placed so far (this run's consumers)
    consumers_done: int
    on_sale_per_producer: tuple[int, ...]  # indexed like Timeline.producers
    waiting_consumers: int
    waiting_producers: int


@dataclass
class Timeline:
    """The samples of one run and what is needed to read them."""

    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    queue_size_per_producer: int
    products_to_buy: int
    sessions_to_run: int
    samples: list[Sample] = field(default_factory=list)

    @property
    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def rate(self, window_s: float = 2.0) -> float:
        """Products bought per second over the last ``window_s`` seconds."""
        if len(self.samples) < 2:
            return 0.0
        last = self.samples[-1]
        first = next(s for s in self.samples if s.t >= last.t - window_s)
        if last.t <= first.t:
            return 0.0
        return (last.bought - first.bought) / (last.t - first.t)
