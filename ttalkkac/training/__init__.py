"""LoRA fine-tuning: hyperparameter spec, trainer, callbacks, outputs.

Importing this package is cheap; torch, transformers and PEFT load inside the functions that
need them (``spec`` and ``report`` never import them at module level).
"""
