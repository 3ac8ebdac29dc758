"""Celery tasks: fetch inputs from the store, call the library, store outputs, report.

Each task takes only a job id, re-reads the job from the database and is safe to run twice:
a finished job is left alone, and training resumes from the newest stored checkpoint.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from celery import shared_task
from celery.app.task import Task

from facespeech import object_keys
from facespeech.config import get_settings
from facespeech.db.models import (
    Artifact,
    Dataset,
    DatasetStatus,
    Job,
    JobStatus,
    ModelStatus,
    TrainedModel,
)
from facespeech.db.session import session_scope
from facespeech.errors import InputError
from facespeech.hooks import Progress, Stopped
from facespeech.jobs import state
from facespeech.jobs.celery_app import TASK_QUEUES
from facespeech.observability import jobs as job_metrics
from facespeech.storage import ObjectStore, get_store
from facespeech.storage.base import StoredObject

if TYPE_CHECKING:  # torch is imported only by the tasks that need it
    from facespeech.render import RenderConfig, Renderer, RendererCache

log = logging.getLogger(__name__)
CANCEL_CHECK_INTERVAL_S = 2.0
KEEP_STORED_CHECKPOINTS = 2


def _worker_name() -> str:
    return socket.gethostname()


def _cancel_checker(job_id: str) -> Callable[[], bool]:
    last_check = 0.0
    canceled = False

    def should_stop() -> bool:
        nonlocal last_check, canceled
        if not canceled and time.monotonic() - last_check >= CANCEL_CHECK_INTERVAL_S:
            last_check = time.monotonic()
            canceled = state.is_cancel_requested(job_id)
        return canceled

    return should_stop


@contextmanager
def _heartbeat(job_id: str, interval_s: float) -> Iterator[None]:
    """Refresh the job's heartbeat from a thread while the task runs; a dead worker stops it."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(interval_s):
            try:
                state.beat(job_id)
            except Exception:  # noqa: BLE001 - a missed beat is harmless; the next one comes
                log.warning("job %s: heartbeat not written", job_id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)


def discard_job_work(job: Job) -> None:
    """A job that ends without success leaves neither a run folder nor stored checkpoints."""
    shutil.rmtree(get_settings().work_dir / "runs" / job.id, ignore_errors=True)
    try:
        get_store().delete_prefix(object_keys.job_checkpoints(job.tenant_id, job.id))
    except Exception:  # noqa: BLE001 - cleanup must not hide the job's own outcome
        log.warning("job %s: stored checkpoints not removed", job.id, exc_info=True)


def _end_unsuccessfully(job: Job, scratch: Path, status: JobStatus, reason: str) -> None:
    """Clean up first, then make the job final: whoever sees it canceled or failed finds
    nothing of it left (the other order let a client see the status before the cleanup)."""
    shutil.rmtree(scratch, ignore_errors=True)
    discard_job_work(job)
    state.finish(job.id, status, reason)


def _run_job(task: Task, job_id: str, stage: str, body: Callable[[Job, Path], None]) -> None:
    settings = get_settings()
    try:
        job = state.claim(job_id, _worker_name(), settings.job_max_attempts, stage)
    except state.JobGone:
        log.info("job %s needs no work", job_id)
        return
    scratch = settings.work_dir / "jobs" / job_id
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        with (
            job_metrics.task_attempt(job.kind, stage),
            _heartbeat(job_id, settings.job_heartbeat_interval_s),
        ):
            body(job, scratch)
    except Stopped:
        _end_unsuccessfully(job, scratch, JobStatus.canceled, "canceled by request")
    except InputError as error:
        _end_unsuccessfully(job, scratch, JobStatus.failed, str(error))
    except Exception as error:  # noqa: BLE001 - any other failure is retried, then reported
        log.exception("job %s attempt %d failed", job_id, job.attempt)
        if job.attempt >= settings.job_max_attempts:
            _end_unsuccessfully(job, scratch, JobStatus.failed,
                                f"internal error: {type(error).__name__}: {error}")
            return
        state.requeue_for_retry(job_id, f"{type(error).__name__}: {error}")
        job_metrics.retried(job.kind, stage)
        raise task.retry(countdown=5 * job.attempt, max_retries=None) from error
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def enqueue(task_name: str, job_id: str) -> str:
    from facespeech.jobs.celery_app import get_celery

    result = get_celery().send_task(task_name, args=[job_id], queue=TASK_QUEUES[task_name])
    return str(result.id)


@state.db_retry
def _record_artifact(job: Job, kind: str, stored: StoredObject) -> None:
    with session_scope() as session:
        existing = session.query(Artifact).filter_by(key=stored.key).one_or_none()
        row = existing or Artifact(tenant_id=job.tenant_id, key=stored.key)
        row.job_id, row.kind = job.id, kind
        row.size_bytes, row.sha256, row.content_type = (
            stored.size,
            stored.sha256,
            stored.content_type,
        )
        session.add(row)


def _fetch_dataset(store: ObjectStore, dataset: Dataset) -> Path:
    """The processed dataset, extracted once per worker and reused by later jobs."""
    target = get_settings().work_dir / "datasets" / dataset.id
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    archive = target.with_suffix(".tar")
    assert dataset.processed_key is not None
    store.get_file(dataset.processed_key, archive)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")  # we wrote it, but never trust a path blindly
    archive.unlink()
    (target / ".complete").touch()
    return target


def _pack_dataset(processed: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w") as tar:
        for path in sorted(processed.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(processed)), recursive=False)
    return archive


# --- preprocessing -------------------------------------------------------------------------


def _load_dataset(dataset_id: str) -> Dataset:
    with session_scope() as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise InputError(f"dataset {dataset_id} no longer exists")
        session.expunge(dataset)
        return dataset


@state.db_retry
def _set_dataset(dataset_id: str, **fields: object) -> None:
    with session_scope() as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is not None:
            for name, value in fields.items():
                setattr(dataset, name, value)


def _preprocess_into_store(job: Job, scratch: Path, dataset: Dataset) -> None:
    from facespeech import preprocess
    from facespeech.preprocess.report import CONTACT_SHEET_NAME

    store = get_store()
    source = scratch / Path(dataset.source_key).name
    store.get_file(dataset.source_key, source)
    out_dir = scratch / "dataset"
    reporter = state.ProgressReporter(job.id, span=(0.0, 0.3 if job.kind == "train" else 1.0))
    should_stop = _cancel_checker(job.id)
    _set_dataset(dataset.id, status=DatasetStatus.processing)
    try:
        config = preprocess.PreprocessConfig(bfm_model=get_settings().bfm_model or None)
        if dataset.source_kind == "archive":  # a dataset in the layout, or several takes
            report = preprocess.import_archive(source, out_dir, config, on_progress=reporter,
                                               should_stop=should_stop)
        else:
            report = preprocess.run(source, out_dir, config, on_progress=reporter,
                                    should_stop=should_stop)
    except InputError as error:
        _set_dataset(dataset.id, status=DatasetStatus.failed, error=str(error))
        raise
    except Stopped:  # the upload is still good: a later run may preprocess it again
        _set_dataset(dataset.id, status=DatasetStatus.uploaded)
        raise
    processed_key = object_keys.dataset_processed(job.tenant_id, dataset.id)
    stored = store.put_file(
        processed_key, _pack_dataset(out_dir, scratch / "processed.tar"), "application/x-tar"
    )
    _record_artifact(job, "dataset", stored)
    report_dict = asdict(report)
    report_key = object_keys.dataset_report(job.tenant_id, dataset.id)
    _record_artifact(
        job,
        "report",
        store.put_bytes(report_key, json.dumps(report_dict, indent=2).encode(), "application/json"),
    )
    sheet = out_dir / CONTACT_SHEET_NAME
    if sheet.exists():  # for a look at the tracking without unpacking the dataset
        key = object_keys.dataset_contact_sheet(job.tenant_id, dataset.id)
        _record_artifact(job, "report", store.put_file(key, sheet, "image/png"))
    _set_dataset(
        dataset.id,
        status=DatasetStatus.ready,
        processed_key=processed_key,
        report=report_dict,
        error=None,
    )


@shared_task(name="facespeech.preprocess", bind=True)
def preprocess_task(self: Task, job_id: str) -> None:
    """Preprocess a dataset; for a training run, hand the same job on to the train queue."""

    def body(job: Job, scratch: Path) -> None:
        assert job.dataset_id is not None
        dataset = _load_dataset(job.dataset_id)
        if dataset.status is not DatasetStatus.ready:
            _preprocess_into_store(job, scratch, dataset)
        if job.kind == "train":
            _hand_over_to_training(job)
        else:
            state.finish(job.id, JobStatus.succeeded)

    _run_job(self, job_id, "preprocess", body)


def _hand_over_to_training(job: Job) -> None:
    with session_scope() as session:
        row = session.get(Job, job.id)
        assert row is not None
        row.status, row.stage, row.attempt = JobStatus.queued, "queued-train", 0
        row.heartbeat_at, row.worker = state.now(), None
        state.add_event(session, job.id, "stage", "preprocessing done, queued for training")
    task_id = enqueue("facespeech.train", job.id)
    with session_scope() as session:
        row = session.get(Job, job.id)
        assert row is not None
        row.celery_task_id = task_id


# --- training ------------------------------------------------------------------------------


def _restore_checkpoint(store: ObjectStore, prefix: str, run_dir: Path) -> int | None:
    """Fetch the newest stored checkpoint unless this worker holds a newer one; its step."""
    stored = sorted(store.list(prefix))
    if stored:
        target = run_dir / "checkpoints" / Path(stored[-1]).name
        if not target.exists():
            store.get_file(stored[-1], target)
    local = sorted((run_dir / "checkpoints").glob("step-*.pt"))
    return int(local[-1].stem.removeprefix("step-")) if local else None


def _checkpoint_uploader(store: ObjectStore, prefix: str) -> Callable[[Path], None]:
    def upload(path: Path) -> None:
        store.put_file(prefix + path.name, path, "application/octet-stream")
        for old in sorted(store.list(prefix))[:-KEEP_STORED_CHECKPOINTS]:
            store.delete(old)

    return upload


@shared_task(name="facespeech.train", bind=True)
def train_task(self: Task, job_id: str) -> None:
    def body(job: Job, scratch: Path) -> None:
        from facespeech import render, train

        store = get_store()
        assert job.dataset_id is not None and job.model_id is not None
        dataset_dir = _fetch_dataset(store, _load_dataset(job.dataset_id))
        config = train.TrainConfig.from_preset(job.params["preset"], job.params.get("overrides"))
        run_dir = get_settings().work_dir / "runs" / job.id
        prefix = object_keys.job_checkpoints(job.tenant_id, job.id)
        resumed_step = _restore_checkpoint(store, prefix, run_dir)
        if resumed_step is not None:
            state.add_event_now(
                job.id, "resume", f"resumed from step {resumed_step}", step=resumed_step
            )
        result = train.run(
            dataset_dir,
            run_dir,
            config,
            on_progress=state.ProgressReporter(job.id, span=(0.3, 1.0)),
            should_stop=_cancel_checker(job.id),
            on_checkpoint=_checkpoint_uploader(store, prefix),
        )
        model_key = object_keys.model_checkpoint(job.tenant_id, job.model_id)
        render.embed(result.checkpoint, dataset_dir)  # render needs no dataset download
        stored = store.put_file(model_key, result.checkpoint, "application/octet-stream")
        _record_artifact(job, "checkpoint", stored)
        with session_scope() as session:
            model = session.get(TrainedModel, job.model_id)
            assert model is not None
            model.status, model.checkpoint_key = ModelStatus.ready, model_key
            model.metrics, model.config = result.metrics, config.model_dump(mode="json")
        state.finish(job.id, JobStatus.succeeded, metrics=result.metrics)
        store.delete_prefix(prefix)
        shutil.rmtree(run_dir, ignore_errors=True)

    _run_job(self, job_id, "train", body)


# --- rendering -----------------------------------------------------------------------------


@shared_task(name="facespeech.render", bind=True)
def render_task(self: Task, job_id: str) -> None:
    def body(job: Job, scratch: Path) -> None:
        from facespeech import render

        store = get_store()
        with session_scope() as session:
            model = session.get(TrainedModel, job.model_id)
            if model is None or model.checkpoint_key is None:
                raise InputError(f"model {job.model_id} is not ready")
            session.expunge(model)
        config = render.RenderConfig(**job.params.get("options", {}))
        renderer = _warm_renderer(store, model, config)
        audio = scratch / Path(job.params["audio_key"]).name
        store.get_file(job.params["audio_key"], audio)
        out = scratch / f"render{config.suffix}"
        result = renderer.render(
            audio,
            out,
            config,
            on_progress=state.ProgressReporter(job.id),
            should_stop=_cancel_checker(job.id),
        )
        key = object_keys.render_video(job.tenant_id, job.id, config.suffix)
        stored = store.put_file(key, out, config.content_type)
        _record_artifact(job, "video", stored)
        metrics = {
            "frames": result.frames,
            "duration_s": result.duration_s,
            "render_fps": result.frames / max(result.seconds_taken, 1e-6),
        }
        state.finish(job.id, JobStatus.succeeded, result_key=key, metrics=metrics)

    _run_job(self, job_id, "render", body)


_renderers: RendererCache | None = None  # this process's warm models, made on first render


def _warm_renderer(store: ObjectStore, model: TrainedModel, config: RenderConfig) -> Renderer:
    """The model loaded on this worker's device, from the LRU cache when it is warm."""
    from facespeech import render

    global _renderers
    settings = get_settings()
    if _renderers is None:
        _renderers = render.RendererCache(
            settings.render_cache_models, int(settings.render_cache_gib * 2**30)
        )
    key = (model.id, model.checkpoint_key, config.device, config.compile)
    renderer, warm = _renderers.get(
        key,
        lambda: render.load(
            _cached_model(store, model), device=config.device, compile_model=config.compile
        ),
    )
    job_metrics.model_cache(hit=warm)
    return renderer


# --- probe: a job with no library work, for fault and load tests of the job machinery -----


@shared_task(name="facespeech.probe", bind=True)
def probe_task(self: Task, job_id: str) -> None:
    """Sleep params.seconds in small steps, reporting progress and honouring cancel."""

    def body(job: Job, scratch: Path) -> None:
        seconds = float(job.params.get("seconds", 0.0))
        reporter, should_stop = state.ProgressReporter(job.id), _cancel_checker(job.id)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            if should_stop():
                raise Stopped("probe canceled")
            reporter(Progress("probe", elapsed / seconds))
            time.sleep(min(0.1, seconds - elapsed))
        state.add_event_now(job.id, "probe", "probe work done", worker=_worker_name())
        state.finish(job.id, JobStatus.succeeded)

    _run_job(self, job_id, "probe", body)


def _cached_model(store: ObjectStore, model: TrainedModel) -> Path:
    """The model file on local disk, with reference frames: a model trained before they were
    embedded at the end of training gets them from its dataset here, once per worker."""
    from facespeech import render

    path = get_settings().work_dir / "models" / model.id / "model.pt"
    if path.exists():
        return path
    assert model.checkpoint_key is not None
    download = path.with_name("download.pt")
    store.get_file(model.checkpoint_key, download)
    if not render.is_embedded(download):
        render.embed(download, _fetch_dataset(store, _load_dataset(model.dataset_id)))
    download.replace(path)
    return path
