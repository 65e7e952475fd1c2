"""The gateway's `GET /metrics`: this process's metrics in Prometheus' text format.

What the gateway measures is FastAPI's own OpenTelemetry instrumentation (on by default since
FastAPI 0.165): `http.server.request.duration` by method, route template and status, which
is also what an operator reads for the provider webhooks (`/v1/webhooks/{provider}`: 202
accepted or ignored, 401 bad signature, 503 no secret). infra/metrics.py installs the meter
provider whose Prometheus reader fills the registry served here.

`/metrics` needs the bearer token whenever the gateway requires one (infra/gateway_auth.py):
the gateway is the process most likely to face a network, and its counts say who sends what
how often; Prometheus sends a bearer token natively (`authorization: {credentials_file: ...}`).
"""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI, Response

METRICS_PATH: Final = "/metrics"


def add_metrics_route(app: FastAPI) -> None:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    @app.get(METRICS_PATH, include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
