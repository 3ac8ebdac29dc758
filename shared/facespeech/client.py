"""A small HTTP client for the facespeech API (used by the demo and the end-to-end tests)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

FINAL = {"succeeded", "failed", "canceled"}


class ApiError(RuntimeError):
    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        try:
            self.problem = response.json()
        except ValueError:
            self.problem = {"detail": response.text}
        super().__init__(
            f"{self.status} {self.problem.get('title', '')}: {self.problem.get('detail', '')}"
        )


class Client:
    def __init__(self, base_url: str, api_key: str, timeout: float = 120.0) -> None:
        self.http = httpx.Client(
            base_url=base_url, timeout=timeout, headers={"Authorization": f"Bearer {api_key}"}
        )

    def _checked(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise ApiError(response)
        return response.json() if response.content else None

    def upload_dataset(self, video: Path, name: str | None = None) -> dict[str, Any]:
        with video.open("rb") as handle:
            files = {"file": (video.name, handle, "application/octet-stream")}
            data = {"name": name} if name else {}
            return self._checked(self.http.post("/v1/datasets", files=files, data=data))  # type: ignore[no-any-return]

    def start_training(
        self, dataset_id: str, preset: str, overrides: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = {"dataset_id": dataset_id, "preset": preset, "overrides": overrides or {}}
        return self._checked(self.http.post("/v1/training-runs", json=body))  # type: ignore[no-any-return]

    def start_render(
        self, model_id: str, audio: Path, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """options: size, fps, background, motion, blink_rate (see RenderOptions)."""
        data = {"model_id": model_id}
        if options:
            data["options"] = json.dumps(options)
        with audio.open("rb") as handle:
            files = {"audio": (audio.name, handle, "application/octet-stream")}
            return self._checked(  # type: ignore[no-any-return]
                self.http.post("/v1/renders", files=files, data=data)
            )

    def job(self, job_id: str) -> dict[str, Any]:
        return self._checked(self.http.get(f"/v1/jobs/{job_id}"))  # type: ignore[no-any-return]

    def model(self, model_id: str) -> dict[str, Any]:
        return self._checked(self.http.get(f"/v1/models/{model_id}"))  # type: ignore[no-any-return]

    def usage(self) -> dict[str, Any]:
        return self._checked(self.http.get("/v1/usage"))  # type: ignore[no-any-return]

    def delete_dataset(self, dataset_id: str) -> None:
        self._checked(self.http.delete(f"/v1/datasets/{dataset_id}"))

    def delete_model(self, model_id: str) -> None:
        self._checked(self.http.delete(f"/v1/models/{model_id}"))

    def follow(self, job_id: str, timeout: float = 3600.0) -> Iterator[dict[str, Any]]:
        """The job's timeline as it happens (Server-Sent Events): each event as a dict, then
        {"kind": "end", "status": ...} once the job is final."""
        headers = {"Accept": "text/event-stream"}
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                              timeout=httpx.Timeout(timeout, connect=10.0)) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError(response)
            kind = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
                    if kind == "end":
                        yield {"kind": "end", **data}
                        return
                    yield data

    def wait(
        self,
        job_id: str,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        timeout: float = 3600.0,
        interval: float = 1.0,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update:
                on_update(job)
            if job["status"] in FINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(interval)

    def download(self, url: str, path: Path) -> Path:
        with httpx.stream("GET", url, timeout=120.0) as response:
            if response.status_code >= 400:
                raise ApiError(response)
            with path.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
        return path
