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

# --- serving -----------------------------------------------------------------------------------
GENERATE_REQUESTS = Counter(
    "ttalkkac_generate_requests_total", "Generate requests by outcome", ["engine", "outcome"]
)  # outcome: ok | rejected (4xx) | unavailable (503) | invalid_output (502) | error |
#   cancelled (a /generate/stream client went away before the end)
GENERATE_LATENCY = Histogram(
    "ttalkkac_generate_seconds",
    "Latency of successful generate requests",
    ["engine"],
    buckets=(0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600),
)
GENERATE_RETRIES = Counter(
    "ttalkkac_generate_retries_total", "Generations retried because the answer did not validate"
)
ENGINE_READY = Gauge(
    "ttalkkac_engine_ready", "1 when the generation engine is ready", ["engine", "mode"]
)
SERVING_MODE = Gauge("ttalkkac_serving_mode", "1 for the serving mode in use", ["mode"])
ADAPTER_SWITCHES = Counter(
    "ttalkkac_adapter_switches_total", "Merged-mode engine switches by outcome", ["outcome"]
)  # outcome: ok | failed
ADAPTER_SWITCH_SECONDS = Histogram(
    "ttalkkac_adapter_switch_seconds",
    "Time from an activation to the new merged engine taking requests",
    buckets=(1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600),
)
MERGED_ADAPTER = Gauge(
    "ttalkkac_merged_adapter", "1 for the adapter merged into the serving weights", ["adapter"]
)
