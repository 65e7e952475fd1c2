"""Metrics for one Counterpoint process: where the instruments of bus/metrics.py and
agents/metrics.py go.

* With ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``) set, they are
  pushed with OTLP/HTTP every ``OTEL_METRIC_EXPORT_INTERVAL`` ms (60000), as OpenTelemetry
  specifies; the exporter reads the other ``OTEL_EXPORTER_OTLP_*`` variables itself.
  ``OTEL_METRICS_EXPORTER=none`` keeps metrics off OTLP while spans still go there (the
  compose file does that: Prometheus scrapes the agents instead).
* With ``COUNTERPOINT_METRICS_PORT`` set, the process serves Prometheus' text format at
  ``http://COUNTERPOINT_METRICS_HOST:PORT/metrics`` (host 127.0.0.1 by default). Port 0 picks a
  free port, so every process on a host (``counterpoint up`` starts one per agent, more for
  scaled ones) gets its own; the address is logged and written as a Prometheus file-based
  service discovery target, ``$COUNTERPOINT_HOME/metrics/<service>-<instance>.json``, removed
  when the process stops. A port that is taken is logged and the process runs on without it:
  metrics never stop an agent.

Neither set: no meter provider is installed and the instruments cost next to nothing.
The Prometheus side is opentelemetry-exporter-prometheus (OTel names become Prometheus ones:
``messaging.client.consumed.messages`` is ``messaging_client_consumed_messages_total``) on
prometheus_client's registry, whose process collectors add CPU, memory and open files.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource

from counterpoint.agents.private_files import private_dir
from counterpoint.infra.telemetry import process_resource

if TYPE_CHECKING:
    # The SDK's metrics are imported only where a provider is made: most processes (every
    # agent of `counterpoint up` by default) have none, and it is a tenth of a second of CPU
    # at each one's start.
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader

log = logging.getLogger(__name__)

_OTLP_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")


def _otlp_wanted() -> bool:
    """OTLP push: an endpoint is set and OTEL_METRICS_EXPORTER (default otlp) names otlp."""
    exporters = os.environ.get("OTEL_METRICS_EXPORTER") or "otlp"
    return ("otlp" in {e.strip() for e in exporters.split(",")}
            and any(os.environ.get(name) for name in _OTLP_ENV))


def default_targets_dir(home: Path) -> Path:
    """Where serving processes announce themselves: ``$COUNTERPOINT_HOME/metrics``."""
    return home / "metrics"


@dataclass
class Metrics:
    """This process's meter provider and where it serves or sends metrics."""

    provider: MeterProvider | None
    url: str | None = None  # the Prometheus endpoint, when serving
    target_file: Path | None = None
    _server: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def shutdown(self) -> None:
        """Stop serving, push what is pending, forget the target; safe to call twice."""
        with self._lock:
            server, self._server = self._server, None
            provider, self.provider = self.provider, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self.target_file is not None:
            self.target_file.unlink(missing_ok=True)
        if provider is not None:
            try:
                provider.shutdown()
            except Exception:
                log.warning("metrics shutdown failed", exc_info=True)


def meter_provider(resource: Resource, *, prometheus: bool, otlp: bool) -> MeterProvider | None:
    """A meter provider with the readers asked for (None when there are none)."""
    if not (prometheus or otlp):
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    readers: list[MetricReader] = []
    if prometheus:
        # Imported lazily, like the OTLP exporter: a process without metrics never needs them.
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        readers.append(PrometheusMetricReader())
    if otlp:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if not readers:
        return None
    return MeterProvider(metric_readers=readers, resource=resource)


def setup_metrics(service_name: str, *, port: int | None, host: str = "127.0.0.1",
                  targets_dir: Path | None = None, instance_id: str | None = None,
                  served_by_app: bool = False) -> Metrics:
    """Install this process's meter provider and serve /metrics on `port` (None: don't).
    `served_by_app`: the Prometheus registry is filled for a /metrics route of the process's
    own (the gateway's), with no server of its own."""
    otlp = _otlp_wanted()
    resource = process_resource(service_name, instance_id)
    provider = meter_provider(resource, prometheus=port is not None or served_by_app,
                              otlp=otlp)
    if provider is None:
        return Metrics(None)
    metrics.set_meter_provider(provider)
    handle = Metrics(provider)
    if port is None:
        return handle
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("cannot serve metrics on %s:%d (%s): this process runs without a "
                    "/metrics endpoint; COUNTERPOINT_METRICS_PORT=0 gives each process a free "
                    "port", host, port, exc)
        return handle
    bound = server.server_port
    shown = f"[{host}]" if ":" in host else host
    handle._server = server
    handle.url = f"http://{shown}:{bound}/metrics"
    log.info("metrics at %s", handle.url)
    if targets_dir is not None:
        attrs = resource.attributes
        handle.target_file = announce(targets_dir, f"{shown}:{bound}",
                                      str(attrs[SERVICE_NAME]), str(attrs[SERVICE_INSTANCE_ID]))
    return handle


def announce(targets_dir: Path, address: str, service: str, instance: str) -> Path | None:
    """Write a file_sd target for `address` (atomically: Prometheus may read it any time)."""
    path = targets_dir / f"{service}-{instance}.json".replace("/", "_")
    body = [{"targets": [address], "labels": {"service_name": service,
                                             "service_instance_id": instance}}]
    try:
        private_dir(targets_dir)
        partial = path.with_suffix(".json.part")
        partial.write_text(json.dumps(body), encoding="utf-8")
        os.replace(partial, path)
    except OSError:
        log.warning("cannot write the metrics target %s; Prometheus file discovery will not "
                    "find this process", path, exc_info=True)
        return None
    return path
