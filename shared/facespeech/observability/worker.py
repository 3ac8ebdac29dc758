"""The /metrics endpoint of a worker process: its own job metrics plus the collectors."""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY, start_http_server

from facespeech.config import Settings
from facespeech.jobs.celery_app import QUEUES
from facespeech.observability import jobs
from facespeech.observability.collectors import JobTableCollector, QueueDepthCollector
from facespeech.observability.gpu import NvmlCollector

log = logging.getLogger(__name__)


def serve_worker_metrics(settings: Settings, port: int, host: str = "0.0.0.0") -> bool:
    """Start the exporter thread; False (and a warning) if the port is taken."""
    jobs.initialise()
    try:
        start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as error:
        # `facespeech serve` and a second local worker share one machine: run without metrics
        # rather than not at all.
        log.warning("worker metrics not served on port %d: %s", port, error)
        return False
    REGISTRY.register(QueueDepthCollector(settings, QUEUES))
    REGISTRY.register(JobTableCollector(jobs.KINDS))
    REGISTRY.register(NvmlCollector())
    log.info("worker metrics on http://%s:%d/metrics", host, port)
    return True
