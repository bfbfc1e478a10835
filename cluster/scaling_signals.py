"""What one model-server replica tells Ray Serve's autoscaler through its custom metrics
(`ModelServer.record_autoscaling_stats`): the SLO signals policies/scaling.py scales on.

Read from the replica's own Prometheus registry (cluster/metrics.py), so it needs nothing of
the engine's internals: counters become rates since the previous call, gauges are read as
they are. Serve calls this every few hundred milliseconds and averages the values over its
look-back window, per replica.

The replica also learns its capacity here, the load at which it starts to miss: each read
adds (its load over the interval, the mean SLO usage of the requests that finished in it)
to a fit (policies/capacity.py) and reports the fit's answer (0 while unknown).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cluster.metrics import ServerMetrics
from cluster.slo import SLO_KINDS
from policies import scaling
from policies.capacity import CapacityFit


class ScalingSignals:
    def __init__(self, metrics: ServerMetrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics, self.clock = metrics, clock
        self._last_time = clock()
        self._last = self._counters()
        self._last_load = self._load()
        self.fit = CapacityFit()

    def _sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(
            name, {"model": self.metrics.model_name, **labels})
        return value or 0.0

    def _counters(self) -> dict[str, float]:
        s = self._sample
        return {
            scaling.REFUSALS: s("tandem_requests_rejected_total", status="429"),
            scaling.ADMITTED: s("tandem_request_queue_time_seconds_count"),
            scaling.SLO_MET: sum(s("tandem_slo_met_total", kind=k) for k in SLO_KINDS),
            scaling.SLO_MISSED: sum(s("tandem_slo_missed_total", kind=k) for k in SLO_KINDS),
            "queue_sum": s("tandem_request_queue_time_seconds_sum"),
            "usage_sum": s("tandem_slo_usage_ratio_sum"),
            "usage_count": s("tandem_slo_usage_ratio_count"),
        }

    def _load(self) -> float:
        return self._sample("tandem_num_requests_running") + self._sample(
            "tandem_num_requests_waiting")

    def read(self) -> dict[str, float]:
        """The signals now: rates over the time since the previous read."""
        now, counters = self.clock(), self._counters()
        dt = max(now - self._last_time, 1e-3)
        delta = {k: max(0.0, v - self._last[k]) for k, v in counters.items()}
        load = self._load()
        if delta["usage_count"] > 0:  # requests finished over the interval: what they used
            self.fit = self.fit.observe(0.5 * (load + self._last_load),
                                        delta["usage_sum"] / delta["usage_count"],
                                        delta["usage_count"], dt)
        self._last_time, self._last, self._last_load = now, counters, load
        started = delta[scaling.ADMITTED]
        s = self._sample
        return {
            scaling.LOAD: load,
            scaling.REFUSALS: delta[scaling.REFUSALS] / dt,
            scaling.ADMITTED: started / dt,
            scaling.SLO_MET: delta[scaling.SLO_MET] / dt,
            scaling.SLO_MISSED: delta[scaling.SLO_MISSED] / dt,
            scaling.QUEUE_DELAY: delta["queue_sum"] / started if started else 0.0,
            scaling.KV_USAGE: s("tandem_kv_cache_usage_ratio"),
            scaling.CAPACITY: self.fit.capacity() or 0.0,
        }
