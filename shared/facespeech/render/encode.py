"""Frames on the device -> encoder, on a thread, so the GPU renders batch n+1 while batch n
is encoded. RGB -> yuv420p happens on the device: half the bytes to copy, no swscale pass."""

from __future__ import annotations

import queue
import threading
import time

import torch
import torch.nn.functional as F

from facespeech.media import VideoWriter

# BT.601 limited range, what swscale uses for rgb24 -> yuv420p (and players assume for
# untagged SD/HD H.264), so the GPU path looks like the CPU one.
_RGB_TO_YUV = torch.tensor([
    [65.481, 128.553, 24.966],
    [-37.797, -74.203, 112.0],
    [112.0, -93.786, -18.214],
])
_YUV_OFFSET = torch.tensor([16.0, 128.0, 128.0])


def rgb_to_yuv420p(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] -> (B, H * 3 // 2, W) uint8: Y, then U and V at half size."""
    batch, _, height, width = rgb.shape
    matrix = _RGB_TO_YUV.to(rgb.device, rgb.dtype)
    offset = _YUV_OFFSET.to(rgb.device, rgb.dtype)
    luma = torch.einsum("cd,bdhw->bchw", matrix[:1], rgb) + offset[0]
    # chroma of the 2x2 average colour: the conversion is linear, so it equals averaging chroma
    small = F.avg_pool2d(rgb, 2)
    chroma = torch.einsum("cd,bdhw->bchw", matrix[1:], small) + offset[1:, None, None]
    planes = torch.cat([luma.flatten(1), chroma.flatten(1)], dim=1)
    return (planes + 0.5).clamp(0, 255).to(torch.uint8).view(batch, height * 3 // 2, width)


def to_rgba8(rgba: torch.Tensor) -> torch.Tensor:
    """(B, 4, H, W) float in [0, 1] -> (B, H, W, 4) uint8, the layout the WebM writer takes."""
    return (rgba * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class FrameSink:
    """Copies batches of yuv420p frames to pinned host memory without waiting, and encodes
    them on a writer thread; at most `depth` batches wait, so memory stays bounded."""

    def __init__(self, writer: VideoWriter, depth: int = 3) -> None:
        self._writer = writer
        self._queue: queue.Queue[tuple[torch.Tensor, torch.cuda.Event | None] | None] = (
            queue.Queue(maxsize=depth))
        self._error: BaseException | None = None
        self._aborted = False
        self._thread = threading.Thread(target=self._encode_loop, name="encoder", daemon=True)
        self._thread.start()
        self.encode_seconds = 0.0  # time the writer thread spent encoding, for profiles

    def put(self, frames: torch.Tensor) -> None:
        """frames (B, H * 3 // 2, W) yuv420p or (B, H, W, 4) RGBA, uint8, on any device."""
        event = None
        if frames.is_cuda:
            host = torch.empty(frames.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(frames, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host = frames
        while True:
            self._raise_if_failed()
            try:
                self._queue.put((host, event), timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Encode what is queued and stop the thread; re-raise its error if it had one."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise_if_failed()

    def abort(self) -> None:
        """Stop without encoding what is still queued (the caller is failing anyway)."""
        self._aborted = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)  # only this thread puts, and the queue was just emptied
        self._thread.join(timeout=30)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError("encoding failed") from self._error

    def _encode_loop(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                host, event = item
                if self._aborted:
                    continue
                if event is not None:
                    event.synchronize()
                started = time.perf_counter()
                for planes in host.numpy():
                    if planes.ndim == 3:  # (H, W, 4) RGBA for a writer with alpha
                        self._writer.write_rgba(planes)
                    else:
                        self._writer.write_yuv420p(planes)
                self.encode_seconds += time.perf_counter() - started
        except BaseException as error:  # noqa: BLE001 - handed to the rendering thread
            self._error = error
