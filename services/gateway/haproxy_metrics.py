"""The HAProxy data plane's figures, per endpoint, on the gateway's /metrics.

Calls HAProxy forwards never pass through Python, so `skmaker_gateway_requests_total` counts
only the calls the Python gateway answered itself. At each scrape this collector reads HAProxy's
statistics (`show stat` on the runtime API) and exports, for each endpoint HAProxy routes:

* `skmaker_gateway_haproxy_requests_total{endpoint}`: calls forwarded (HTTP/2 streams);
* `skmaker_gateway_haproxy_outstanding{endpoint}`: calls in flight now;
* `skmaker_gateway_haproxy_retries_total{endpoint}`: calls sent again after a failed connection;
* `skmaker_gateway_haproxy_errors_total{endpoint}`: calls that got no answer from any replica
  (connection or response errors; the caller got UNAVAILABLE);
* `skmaker_gateway_haproxy_replicas{endpoint}`: replicas HAProxy sends calls to.

The counters belong to the endpoint's backend slot; an endpoint that leaves and comes back may
land on another slot, which Prometheus' rate() treats as a counter reset.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from services.gateway.haproxy_routes import HaproxyRoutes

log = logging.getLogger(__name__)


# `show stat` column(s) (summed with +), family, name, help.
_FROM_BACKEND_ROW: tuple[
    tuple[str, type[CounterMetricFamily | GaugeMetricFamily], str, str], ...
] = (
    ("stot", CounterMetricFamily, "requests", "Calls HAProxy forwarded to the endpoint."),
    ("scur", GaugeMetricFamily, "outstanding", "Calls HAProxy has in flight to the endpoint."),
    ("wretr", CounterMetricFamily, "retries", "Calls sent again after a failed connection."),
    ("econ+eresp", CounterMetricFamily, "errors", "Calls no replica answered (UNAVAILABLE)."),
)


def backend_rows(show_stat: str) -> dict[str, dict[str, str]]:
    """`show stat` CSV -> backend name -> its BACKEND row (column name -> value)."""
    text = show_stat.lstrip("# ")
    rows = {}
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("svname") == "BACKEND" and row.get("pxname"):
            rows[row["pxname"]] = row
    return rows


def _number(row: dict[str, str], column: str) -> float:
    value = row.get(column) or "0"
    try:
        return float(value)
    except ValueError:
        return 0.0


class HaproxyStatsCollector(Collector):
    """Reads HAProxy's statistics at each scrape (see the module docstring).

    Args:
        command: runs one runtime API command (`HaproxyProcess.command`).
        routes: which backend serves which endpoint, and with how many replicas.
    """

    def __init__(self, command: Callable[[str], str], routes: HaproxyRoutes) -> None:
        self._command = command
        self._routes = routes

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        families = {
            column: kind(f"skmaker_gateway_haproxy_{name}", help_text, labels=["endpoint"])
            for column, kind, name, help_text in _FROM_BACKEND_ROW
        }
        replicas = GaugeMetricFamily(
            "skmaker_gateway_haproxy_replicas",
            "Replicas HAProxy sends the endpoint's calls to.",
            labels=["endpoint"],
        )
        backends = self._routes.backend_endpoints()
        routed = self._routes.routed()
        try:
            rows = backend_rows(self._command("show stat")) if backends else {}
        except OSError as err:
            log.debug("haproxy statistics unavailable: %s", err)
            rows = {}
        for backend, endpoint in sorted(backends.items()):
            row = rows.get(backend)
            if row is not None:
                for columns, family in families.items():
                    value = sum(_number(row, column) for column in columns.split("+"))
                    family.add_metric([endpoint], value)
            replicas.add_metric([endpoint], len(routed.get(endpoint, ())))
        yield from (*families.values(), replicas)
