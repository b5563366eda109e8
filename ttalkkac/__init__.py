"""Ttalkkac: meeting transcripts to structured project plans with a LoRA fine-tuned LLM.

The domain core: settings, the plan schema, prompts, meetings, gold-standard data, the store,
the trainer and the generation engines. It imports neither FastAPI nor Celery, and torch, PEFT,
TRL and vLLM only inside ``ttalkkac.training`` and ``ttalkkac.inference`` modules (and torch in
``ttalkkac.hardware``'s GPU probes, when they are called: never at import).
"""

__version__ = "0.1.0"
