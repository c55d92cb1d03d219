"""The server's Prometheus metrics, in a registry of its own (several servers may live in one
process, as in the tests): requests by route and status, the queue's length, the decode batch's
size, time to first token, and generated tokens (their rate is the tokens/s)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lmatlas_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.latency = Histogram("lmatlas_request_seconds", "time to answer a request (a stream: to its end)",
                                 ["route"], registry=r)
        self.queue = Gauge("lmatlas_queue_length", "generation requests waiting to join the batch", registry=r)
        self.batch = Gauge("lmatlas_batch_size", "rows in the last decoding step", registry=r)
        self.first_token = Histogram("lmatlas_time_to_first_token_seconds", "from a request's arrival to its first "
                                     "token", registry=r, buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.tokens = Counter("lmatlas_generated_tokens", "tokens generated (rate() of it: tokens/s)", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "Metrics"]
