"""A vLLM general plugin (entry point ``vllm.general_plugins``): vLLM runs ``register`` in each
of its processes (the API's, the engine core, the CPU worker) before it builds a model.

It works around one bug of vLLM 0.32 on the CPU. There vLLM compiles the model with torch's
own inductor backend (``CompilationMode.DYNAMO_TRACE_ONCE``) and saves it in its compile cache
(``torch_compile_cache/torch_aot_compile``), but the loader then calls ``finalize_loading``, a
method only the artifact of vLLM's own backend has, on the plain function that torch's artifact
holds. Every start therefore failed to load the cache ("Compiling model again due to a load
failure ... 'function' object has no attribute 'finalize_loading'") and compiled again: on 2
cores, the demo model's engine initialised in 54 s instead of 8 s, and a restart of
``ttalkkac up`` took 130 s to ready instead of 90 s. The plain function needs no finalizing, so
the plugin gives it a no-op one as it is loaded; nothing else changes, and an artifact that has
the method (a GPU's) is left alone.
"""

from __future__ import annotations

import contextlib
from typing import Any

_MARK = "_ttalkkac_finalize_patch"


def register() -> None:
    import torch

    compiler = torch.compiler
    load = getattr(compiler, "load_compiled_function", None)
    if load is None or getattr(load, _MARK, False):
        return

    def load_compiled_function(*args: Any, **kwargs: Any) -> Any:
        loaded = load(*args, **kwargs)
        add_missing_finalize(loaded)
        return loaded

    setattr(load_compiled_function, _MARK, True)
    compiler.load_compiled_function = load_compiled_function


def add_missing_finalize(loaded: Any) -> None:
    """Give ``loaded``'s compiled function a no-op ``finalize_loading`` if it has none."""
    compiled = getattr(getattr(loaded, "_artifacts", None), "compiled_fn", None)
    if compiled is not None and not hasattr(compiled, "finalize_loading"):
        # An object that takes no attributes is left as it is.
        with contextlib.suppress(AttributeError, TypeError):
            compiled.finalize_loading = _nothing_to_finalize


def _nothing_to_finalize(vllm_config: Any) -> None:
    """torch's own compiled artifact is whole once loaded."""
