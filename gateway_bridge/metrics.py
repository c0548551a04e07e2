"""Operational metrics in the Prometheus text format (prometheus_client, own registry).

Counted: requests by kind, authorisation outcomes by response code, envelope and payload
refusals by reason, duplicates, replays, reversals by outcome, connector errors, and the
time from a request's arrival to its response being published. Labels never carry card
data or terminal secrets: terminal ids are not labels (a fleet would explode the series).
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

#: Latency buckets in seconds: the bridge's own work is about a millisecond.
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class BridgeMetrics:
    """Every metric of one bridge process, in a registry of its own (no global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "pos_bridge_requests", "Requests received, by envelope kind", ["kind"], registry=r
        )
        self.outcomes = Counter(
            "pos_bridge_authorizations",
            "Authorisations answered, by response code",
            ["response_code"],
            registry=r,
        )
        self.refused = Counter(
            "pos_bridge_refused",
            "Payloads refused before processing, by reason",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "pos_bridge_duplicates", "Requests answered from the journal (same key)", registry=r
        )
        self.reversals = Counter(
            "pos_bridge_reversals", "Reversals processed, by outcome", ["outcome"], registry=r
        )
        self.connector_errors = Counter(
            "pos_bridge_connector_errors", "Connector failures, by kind", ["kind"], registry=r
        )
        self.latency = Histogram(
            "pos_bridge_request_seconds",
            "From a request's arrival to its response being published",
            buckets=_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("pos_bridge_in_flight", "Requests being processed", registry=r)
        self.pending_reversals = Gauge(
            "pos_bridge_pending_reversals", "Reversals not yet acknowledged", registry=r
        )

    def serve(self, host: str, port: int) -> MetricsServer:
        """Serve ``/metrics`` on ``host:port`` (0 = a free port) from a thread."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        return MetricsServer(server, thread)


class MetricsServer:
    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
