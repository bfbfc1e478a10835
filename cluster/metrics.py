"""Prometheus metrics of one model-server replica (names prefixed tandem_).

Each replica keeps its own registry; the ingress's /metrics asks the replicas for their text
(see cluster/metrics_board.py) and labels every series with the replica it came from.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from cluster.job import ChoiceStats
from cluster.slo import Latency
from engine.engine import EngineStats

disable_created_metrics()

# Latency buckets (seconds): a CPU step of the tiny model is ~50 ms, a GPU step ~1 ms.
_LAT = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0,
        2.5, 5.0, 10.0, 30.0, 60.0)


class ServerMetrics:
    def __init__(self, model_name: str) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.model_name = model_name
        m = ["model"]
        self.ttft = Histogram("tandem_time_to_first_token_seconds",
                              "Time from arrival to the first output token.", m,
                              buckets=_LAT, registry=r)
        self.itl = Histogram("tandem_inter_token_latency_seconds",
                             "Time per output token after the first emission (a step "
                             "that emits k tokens counts k times its gap / k).", m,
                             buckets=_LAT, registry=r)
        self.e2e = Histogram("tandem_e2e_request_latency_seconds",
                             "Time from arrival to the last token.", m, buckets=_LAT,
                             registry=r)
        self.queue = Histogram("tandem_request_queue_time_seconds",
                               "Time from arrival to the first step that ran the request.", m,
                               buckets=_LAT, registry=r)
        self.slo_usage = Histogram("tandem_slo_usage_ratio",
                                   "Finished requests' latency over their SLO, the worst "
                                   "kind (1 = just met; above = missed).", m,
                                   buckets=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0), registry=r)
        self.running = Gauge("tandem_num_requests_running", "Requests in the running batch.",
                             m, registry=r)
        self.waiting = Gauge("tandem_num_requests_waiting", "Requests waiting to be scheduled.",
                             m, registry=r)
        self.kv_usage = Gauge("tandem_kv_cache_usage_ratio", "Share of KV blocks in use.", m,
                              registry=r)
        self.kv_free = Gauge("tandem_kv_cache_free_blocks", "Free KV cache blocks.", m,
                             registry=r)
        self.kv_total = Gauge("tandem_kv_cache_blocks", "KV cache blocks in all.", m,
                              registry=r)
        self._counters(r)

    def _counters(self, r: CollectorRegistry) -> None:
        mm = ["model", "mode"]
        self.prompt_tokens = Counter("tandem_prompt_tokens", "Prompt tokens processed.",
                                     ["model"], registry=r)
        self.gen_tokens = Counter("tandem_generation_tokens", "Output tokens, by the mode "
                                  "that emitted them.", mm, registry=r)
        self.forwards = Counter("tandem_forwards", "Forward passes a request took part in, by "
                                "mode (prefill counted apart).", mm, registry=r)
        self.drafted = Counter("tandem_draft_tokens", "Draft tokens proposed, by mode.", mm,
                               registry=r)
        self.accepted = Counter("tandem_accepted_draft_tokens", "Draft tokens accepted by the "
                                "verifier, by mode.", mm, registry=r)
        self.mode_chosen = Counter("tandem_request_mode", "Finished requests by requested and "
                                   "chosen mode (the mode that emitted most of its tokens).",
                                   ["model", "requested", "chosen"], registry=r)
        self.finished = Counter("tandem_requests_finished", "Finished requests by reason.",
                                ["model", "finish_reason"], registry=r)
        self.aborted = Counter("tandem_requests_aborted", "Requests aborted before the end "
                               "(the client went away).", ["model"], registry=r)
        self.rejected = Counter("tandem_requests_rejected", "Requests refused before running, "
                                "by HTTP status.", ["model", "status"], registry=r)
        self.slo_met = Counter("tandem_slo_met", "Requests that met their SLO, per SLO kind.",
                               ["model", "kind"], registry=r)
        self.slo_missed = Counter("tandem_slo_missed", "Requests that missed their SLO, per "
                                  "SLO kind.", ["model", "kind"], registry=r)
        self.engine_errors = Counter("tandem_engine_errors", "Engine failures by stage "
                                     "(admit, step): a broken policy or executor, each "
                                     "answered with a 500 and logged at ERROR.",
                                     ["model", "stage"], registry=r)

    # --- observations ----------------------------------------------------------------------

    def observe_engine(self, stats: EngineStats) -> None:
        n = self.model_name
        self.running.labels(n).set(stats.num_running)
        self.waiting.labels(n).set(stats.num_waiting)
        self.kv_free.labels(n).set(stats.kv_free_blocks)
        self.kv_total.labels(n).set(stats.kv_blocks)
        self.kv_usage.labels(n).set(1.0 - stats.kv_free_blocks / max(1, stats.kv_blocks))

    def observe_engine_error(self, stage: str) -> None:
        self.engine_errors.labels(self.model_name, stage).inc()

    def observe_tokens(self, gap_s: float, num_tokens: int, is_first: bool,
                       since_arrival_s: float) -> None:
        if num_tokens <= 0:
            return
        if is_first:  # tokens that come with the first one have no gap of their own
            self.ttft.labels(self.model_name).observe(since_arrival_s)
            return
        for _ in range(num_tokens):
            self.itl.labels(self.model_name).observe(gap_s / num_tokens)

    def observe_queue(self, seconds: float) -> None:
        self.queue.labels(self.model_name).observe(seconds)

    def observe_aborted(self, num: int) -> None:
        if num:
            self.aborted.labels(self.model_name).inc(num)

    def observe_rejected(self, status: int) -> None:
        self.rejected.labels(self.model_name, str(status)).inc()

    def observe_finished(self, stats: ChoiceStats, finish_reason: str, requested: str,
                         latency: Latency, slo: dict[str, bool],
                         usage: float | None = None) -> None:
        n = self.model_name
        if usage is not None:
            self.slo_usage.labels(n).observe(usage)
        self.e2e.labels(n).observe(latency.e2e_s)
        self.prompt_tokens.labels(n).inc(stats.num_prompt_tokens)
        for mode, k in stats.tokens_by_mode.items():
            self.gen_tokens.labels(n, mode).inc(k)
        for mode, k in stats.forwards_by_mode.items():
            self.forwards.labels(n, mode).inc(k)
        for mode, k in stats.drafted_by_mode.items():
            self.drafted.labels(n, mode).inc(k)
        for mode, k in stats.accepted_by_mode.items():
            self.accepted.labels(n, mode).inc(k)
        self.mode_chosen.labels(n, requested, chosen_mode(stats)).inc()
        self.finished.labels(n, finish_reason).inc()
        for kind, met in slo.items():
            (self.slo_met if met else self.slo_missed).labels(n, kind).inc()

    def latency_sums(self) -> dict[str, float]:
        """TTFT and queue-time sums and counts, read live from the histograms (for /health:
        `tandem bench serve` reads them there; /metrics sees them only every few seconds)."""
        def sample(name: str) -> float:
            return self.registry.get_sample_value(name, {"model": self.model_name}) or 0.0
        return {"ttft_total_s": sample("tandem_time_to_first_token_seconds_sum"),
                "num_first_tokens": sample("tandem_time_to_first_token_seconds_count"),
                "queue_total_s": sample("tandem_request_queue_time_seconds_sum"),
                "num_queued": sample("tandem_request_queue_time_seconds_count")}

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def chosen_mode(stats: ChoiceStats) -> str:
    """The decode mode that emitted most of a request's tokens (prefill aside)."""
    decode = {m: k for m, k in stats.tokens_by_mode.items() if m != "prefill" and k > 0}
    if not decode:
        return "prefill"
    return max(decode, key=decode.__getitem__)
