"""How /metrics sees every model-server replica without Ray's metrics export (no dashboard).

Each replica pushes its Prometheus text to a small named actor (the board) every couple of
seconds; the ingress asks the replica it reaches for fresh text, takes the others from the
board (dropping replicas that stopped pushing), and merges them into one exposition with a
`replica` label on every series.
"""

from __future__ import annotations

import time

import ray
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

PUSH_INTERVAL_S = 2.0
MAX_AGE_S = 15.0


@ray.remote(num_cpus=0)
class MetricsBoard:
    def __init__(self) -> None:
        self.snapshots: dict[str, tuple[float, str]] = {}

    def put(self, replica: str, text: str) -> None:
        self.snapshots[replica] = (time.monotonic(), text)

    def get(self, max_age_s: float = MAX_AGE_S) -> dict[str, str]:
        now = time.monotonic()
        self.snapshots = {r: s for r, s in self.snapshots.items() if now - s[0] <= max_age_s}
        return {r: text for r, (_, text) in self.snapshots.items()}


class BoardClient:
    """A handle to the app's board that finds (or makes) it again when it has gone away."""

    def __init__(self, app_name: str) -> None:
        self.name = f"tandem-metrics-{app_name}"
        self._handle = None

    def _board(self):  # noqa: ANN202
        if self._handle is None:
            self._handle = MetricsBoard.options(name=self.name, namespace="tandem",
                                                get_if_exists=True).remote()
        return self._handle

    async def put(self, replica: str, text: str) -> None:
        try:
            await self._board().put.remote(replica, text)
        except ray.exceptions.RayActorError:
            self._handle = None

    async def get(self) -> dict[str, str]:
        try:
            return await self._board().get.remote()
        except ray.exceptions.RayActorError:
            self._handle = None
            return {}


class _Merged:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def merge(texts: dict[str, str]) -> str:
    """One exposition from several replicas' texts, each series labelled with its replica."""
    families: dict[str, Metric] = {}
    for replica, text in sorted(texts.items()):
        for fam in text_string_to_metric_families(text):
            merged = families.get(fam.name)
            if merged is None:
                merged = families[fam.name] = Metric(fam.name, fam.documentation, fam.type,
                                                     fam.unit)
            for s in fam.samples:
                labels = {**s.labels, "replica": replica}
                merged.samples.append(Sample(s.name, labels, s.value, s.timestamp, s.exemplar))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(list(families.values())))  # type: ignore[arg-type]
    return generate_latest(registry).decode()
