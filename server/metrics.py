"""Prometheus metrics of one server (its own registry, so several servers can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    """Active streams, samples generated, per-stream real-time factor, time to first audio, gaps between chunks,
    requests by outcome."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.active = Gauge("wavenet_active_streams", "Streams being generated", ["model"], registry=self.registry)
        self.capacity = Gauge("wavenet_max_streams", "Streams admitted at once (--max-streams, or measured at start)",
                              ["model"], registry=self.registry)
        self.samples = Counter("wavenet_samples_generated", "Audio samples sent", ["model"], registry=self.registry)
        self.rtf = Histogram("wavenet_stream_real_time_factor", "Seconds of audio per wall second, per stream",
                             ["model"], buckets=(0.25, 0.5, 1, 1.5, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.ttfa = Histogram("wavenet_time_to_first_audio_seconds", "Request start to first audio chunk", ["model"],
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=self.registry)
        self.chunk_gap = Histogram("wavenet_chunk_gap_seconds", "Time between a call's consecutive audio chunks",
                                   ["model"], buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
                                   registry=self.registry)
        self.requests = Counter("wavenet_requests", "Finished requests by method and status code",
                                ["method", "code"], registry=self.registry)

    def serve(self, port: int, host: str) -> None:
        """Expose /metrics over HTTP in a background thread."""
        start_http_server(port, addr=host, registry=self.registry)
