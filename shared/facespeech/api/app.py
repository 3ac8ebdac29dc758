"""The FastAPI application: routers, problem+json errors, metrics, migrations on start."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from facespeech.api.problems import install_problem_handlers
from facespeech.api.routes import datasets, jobs, system, usage, web
from facespeech.config import get_settings
from facespeech.db.migrate import upgrade_head
from facespeech.observability.metrics import MetricsMiddleware


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    upgrade_head(settings.database_url)
    # Everything loaded so far lives as long as the process. Frozen, the collector no longer
    # walks it: an oldest-generation pass over ~200k start-up objects took 100-140 ms every
    # few seconds under load and was the whole tail of the latency (docs/RELIABILITY.md).
    gc.collect()
    gc.freeze()
    yield


def create_app() -> FastAPI:
    app = FastAPI(
        title="facespeech",
        version="0.1.0",
        description="Upload a talking video, train an audio-driven talking head, render speech.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    settings = get_settings()
    if settings.cors_origins:  # closed by default: no Access-Control-* headers at all
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        )
    app.add_middleware(MetricsMiddleware)
    for module in (system, datasets, jobs, usage, web):
        app.include_router(module.router)
    web.mount_static(app)
    return app
