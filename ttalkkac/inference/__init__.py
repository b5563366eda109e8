"""Plan generation: engines (vLLM, transformers + PEFT), the generator service, the Python API.

Importing this package is cheap: torch, PEFT and vLLM load only when an engine starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ttalkkac.adapters import AdapterRef
    from ttalkkac.inference.base import Engine, EngineRequest, EngineResult
    from ttalkkac.inference.client import TtalkkacInference
    from ttalkkac.inference.engines import EngineHost
    from ttalkkac.inference.retry import PlanValidity
    from ttalkkac.inference.service import PlanGenerator, PlanResult

_EXPORTS = {
    "AdapterRef": "ttalkkac.adapters",
    "Engine": "ttalkkac.inference.base",
    "EngineRequest": "ttalkkac.inference.base",
    "EngineResult": "ttalkkac.inference.base",
    "EngineHost": "ttalkkac.inference.engines",
    "PlanGenerator": "ttalkkac.inference.service",
    "PlanResult": "ttalkkac.inference.service",
    "PlanValidity": "ttalkkac.inference.retry",
    "TtalkkacInference": "ttalkkac.inference.client",
}

__all__ = [
    "AdapterRef",
    "Engine",
    "EngineHost",
    "EngineRequest",
    "EngineResult",
    "PlanGenerator",
    "PlanResult",
    "PlanValidity",
    "TtalkkacInference",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
