"""Health and metrics endpoints (aiohttp): ``/healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from newsmtl.consumer._lifecycle import AsyncLifecycle
from newsmtl.consumer._metrics import ServiceMetrics

__all__ = ["HealthServer", "ReadinessCheck"]

log = logging.getLogger(__name__)

#: Returns ``(ready, details)``; details name each check and its outcome.
ReadinessCheck = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


class HealthServer(AsyncLifecycle):
    """A small aiohttp server beside the service.

    ``/healthz`` answers 200 as long as the event loop runs (liveness); ``/readyz`` answers 200
    only when ``readiness()`` says so (503 otherwise, with the failing checks in the body);
    ``/metrics`` is the Prometheus exposition of ``metrics``. ``port=0`` binds a free port,
    readable from :attr:`port` after :meth:`start`.
    """

    def __init__(self, *, host: str, port: int, metrics: ServiceMetrics, readiness: ReadinessCheck) -> None:
        self._host = host
        self._port = port
        self._metrics = metrics
        self._readiness = readiness
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else self._port
        log.info("health and metrics on http://%s:%s", self._host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, details = await self._readiness()
        return web.Response(
            status=200 if ready else 503,
            text=json.dumps({"ready": ready, "checks": details}, sort_keys=True),
            content_type="application/json",
        )

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        response = web.Response(body=self._metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
