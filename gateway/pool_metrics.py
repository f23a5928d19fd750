"""The pools' state as Prometheus metrics, read from the balancers at scrape time.

Nothing is counted on the request path for these: the collector reads what
the balancers hold when Prometheus asks. The `replica` label is the replica's
`host:port`, a bounded set (the pool's members).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.pool import BackendPool


def replica_label(address: str) -> str:
    return urlsplit(address).netloc


class PoolCollector(Collector):
    def __init__(self, pools: Mapping[str, BackendPool]) -> None:
        self._pools = pools

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        in_flight = GaugeMetricFamily(
            "rollgate_pool_replica_in_flight",
            "Requests this gateway has in flight on a replica.",
            labels=("pool", "replica"),
        )
        available = GaugeMetricFamily(
            "rollgate_pool_replica_available",
            "1 when the replica takes requests (probed healthy, not ejected), else 0.",
            labels=("pool", "replica"),
        )
        ejections = CounterMetricFamily(
            "rollgate_pool_ejections",
            "Replicas taken out of a pool after consecutive failed requests.",
            labels=("pool",),
        )
        retries = CounterMetricFamily(
            "rollgate_pool_retries",
            "Requests sent to another replica of the same pool after one failed.",
            labels=("pool",),
        )
        for name, pool in self._pools.items():
            summary = pool.balancer.summary()
            for replica in summary["replicas"]:  # type: ignore[union-attr]
                labels = (name, replica_label(replica["address"]))
                in_flight.add_metric(labels, replica["in_flight"])
                available.add_metric(labels, 1.0 if replica["state"] == "available" else 0.0)
            ejections.add_metric((name,), pool.balancer.ejections_total)
            retries.add_metric((name,), pool.retries)
        yield from (in_flight, available, ejections, retries)
