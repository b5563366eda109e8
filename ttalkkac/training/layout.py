"""Names inside a job folder (``DATA_DIR/jobs/<job id>/``), for the trainer and its readers.

A module without heavy imports: the API lists checkpoints and zips TensorBoard files without
loading transformers, which ``ttalkkac.training.trainer`` imports at module level.
"""

from __future__ import annotations

CHECKPOINTS_DIR = "checkpoints"  # checkpoint-<step>/ folders written by transformers' Trainer
CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE_FILE = "trainer_state.json"  # written last into a checkpoint by the Trainer
TENSORBOARD_DIR = "tensorboard"  # event files of report_to=tensorboard
