"""Per-GPU metrics of this machine through NVML, read at scrape time.

No NVML library, no driver or no GPU means no series and no error: the CPU preprocess worker
and the test machines run the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
LABELS = ["gpu", "uuid", "name"]


def _load_nvml() -> Any | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        log.info("NVML unavailable, no GPU metrics: %s", error)
        return None
    return pynvml


class NvmlCollector(Collector):
    def __init__(self) -> None:
        self.nvml = _load_nvml()

    def collect(self) -> Iterator[Metric]:
        if self.nvml is None:
            return
        nvml = self.nvml
        families = {
            "utilization": GaugeMetricFamily(
                "facespeech_gpu_utilization_percent", "GPU busy time, last sample period",
                labels=LABELS),
            "memory_used": GaugeMetricFamily(
                "facespeech_gpu_memory_used_bytes", "GPU memory in use", labels=LABELS),
            "memory_total": GaugeMetricFamily(
                "facespeech_gpu_memory_total_bytes", "GPU memory installed", labels=LABELS),
            "power": GaugeMetricFamily(
                "facespeech_gpu_power_watts", "GPU power draw", labels=LABELS),
            "temperature": GaugeMetricFamily(
                "facespeech_gpu_temperature_celsius", "GPU core temperature", labels=LABELS),
            "sm_clock": GaugeMetricFamily(
                "facespeech_gpu_sm_clock_hertz", "GPU SM clock", labels=LABELS),
            "memory_clock": GaugeMetricFamily(
                "facespeech_gpu_memory_clock_hertz", "GPU memory clock", labels=LABELS),
        }
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as error:
            log.warning("NVML device count failed: %s", error)
            return
        for index in range(count):
            self._sample(index, families)
        yield from families.values()

    def _sample(self, index: int, families: dict[str, GaugeMetricFamily]) -> None:
        nvml = self.nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            labels = [str(index), _text(nvml.nvmlDeviceGetUUID(handle)),
                      _text(nvml.nvmlDeviceGetName(handle))]
        except nvml.NVMLError as error:
            log.warning("NVML: GPU %d unreadable: %s", index, error)
            return
        readings: dict[str, Callable[[], float]] = {
            "utilization": lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
            "memory_used": lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used,
            "memory_total": lambda: nvml.nvmlDeviceGetMemoryInfo(handle).total,
            "power": lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            "temperature": lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
            "sm_clock": lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM) * 1e6,
            "memory_clock": lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM) * 1e6,
        }
        for key, read in readings.items():
            try:
                families[key].add_metric(labels, float(read()))
            except nvml.NVMLError:
                continue  # not every board reports every field (power on some MIG/vGPU setups)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
