"""Prometheus metrics of the API process, declared once."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "ttalkkac_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "ttalkkac_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
UNHANDLED_ERRORS = Counter("ttalkkac_unhandled_errors_total", "Unhandled exceptions (500s)")
GENERATE_QUEUE_DEPTH = Gauge(
    "ttalkkac_generate_queue_depth", "Generate requests waiting or running in the engine"
)
GENERATED_TOKENS = Counter(
    "ttalkkac_generated_tokens_total", "Tokens generated", ["kind"]
)  # kind: prompt | completion
