"""What `GET /metrics` shows, in the Prometheus text format (prometheus-client).

One `Metrics` per running app, on its own registry (not the library's global one), so that two apps
in one test process count apart. The dispatcher, the poller and search call the small methods
below; the HTTP server renders `exposition()`.

No label carries a secret or a chat's private id: platforms are names, sources are feed numbers
(a feed's URL may hold a token in its query string), outcomes are a fixed set of words.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
OUTCOMES = ("sent", "edited", "skipped", "retry", "dead", "disabled", "moved")
"""What became of one delivery attempt (the `outcome` label of livedesk_deliveries_total)."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_SEARCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.deliveries = Counter(
            "livedesk_deliveries",
            "Delivery attempts by platform and outcome.",
            ["platform", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "livedesk_delivery_latency_seconds",
            "From a delivery's creation (its post's import, as this worker saw it) to its send, "
            "per platform; what was pending before the worker started is not timed.",
            ["platform"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.outbox_depth = Gauge(
            "livedesk_outbox_depth",
            "Deliveries in the outbox by state (pending, dead), read from the store at each scrape.",
            ["state"],
            registry=r,
        )
        self.rate_limited = Counter(
            "livedesk_rate_limited_responses",
            "429 (or Retry-After) answers received from a platform.",
            ["platform"],
            registry=r,
        )
        self.retries = Counter(
            "livedesk_delivery_retries",
            "Deliveries put back for another try.",
            ["platform"],
            registry=r,
        )
        self.dead = Counter(
            "livedesk_dead_deliveries",
            "Deliveries given up on (see `GET /api/v1/deliveries?state=dead`).",
            ["platform"],
            registry=r,
        )
        self.fetches = Counter(
            "livedesk_source_fetches",
            "Fetches of a followed source by outcome (imported, not-modified, failed).",
            ["source", "outcome"],
            registry=r,
        )
        self.fetch_errors = Counter(
            "livedesk_source_fetch_errors",
            "Failed fetches of a followed source.",
            ["source"],
            registry=r,
        )
        self.search_latency = Histogram(
            "livedesk_search_seconds",
            "Time to answer one search (commands, API, dashboard).",
            buckets=_SEARCH_BUCKETS,
            registry=r,
        )
        self.rate_limit_use = Gauge(
            "livedesk_rate_limit_use_ratio",
            "Share of the platform's bot-wide send budget used over the last second (0 to 1).",
            ["platform"],
            registry=r,
        )
        self._refreshers: list[Callable[[], None]] = []
        self._delivery_children: dict[
            tuple[str, str], tuple[Counter, Counter | None, Histogram]
        ] = {}

    def on_scrape(self, refresh: Callable[[], None]) -> None:
        """Call `refresh` before each scrape (gauges read from live state: rate-limit use)."""
        self._refreshers.append(refresh)

    def refresh(self) -> None:
        for refresh in self._refreshers:
            refresh()

    def delivered(self, platform: str, outcome: str, *, latency: float | None = None) -> None:
        """One delivery attempt's outcome (the dispatcher calls this per delivery: the labelled
        children are looked up once, which is most of the cost)."""
        key = (platform, outcome)
        children = self._delivery_children.get(key)
        if children is None:
            also = {"retry": self.retries, "dead": self.dead}.get(outcome)
            children = self._delivery_children[key] = (
                self.deliveries.labels(platform, outcome),
                also.labels(platform) if also is not None else None,
                self.latency.labels(platform),
            )
        count, extra, timing = children
        count.inc()
        if extra is not None:
            extra.inc()
        if latency is not None:
            timing.observe(max(latency, 0.0))

    def throttled(self, platform: str) -> None:
        self.rate_limited.labels(platform).inc()

    def fetched(self, source: int | str, outcome: str) -> None:
        self.fetches.labels(str(source), outcome).inc()
        if outcome == "failed":
            self.fetch_errors.labels(str(source)).inc()

    def searched(self, seconds: float) -> None:
        self.search_latency.observe(seconds)

    def set_depth(self, counts: dict[str, int]) -> None:
        for state in ("pending", "dead"):
            self.outbox_depth.labels(state).set(counts.get(state, 0))

    def set_rate_limit_use(self, platform: str, ratio: float) -> None:
        self.rate_limit_use.labels(platform).set(min(max(ratio, 0.0), 1.0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
