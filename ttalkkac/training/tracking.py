"""Experiment tracking through transformers' own integrations (``report_to``).

The Trainer's ``TensorBoardCallback`` and ``MLflowCallback`` are configured the way their
documentation says, through environment variables they read when the trainer is built and when
training begins. ``tracking_env`` sets those for the duration of one run and puts the previous
values back, so a process that trains twice (the tests, the CLI) never reports one run's
metrics to another run's destination.

- ``tensorboard``: event files in ``<job folder>/tensorboard`` (not under ``checkpoints/``,
  which a successful run removes), downloadable as a zip.
- ``mlflow``: to ``MLFLOW_TRACKING_URI``, experiment ``MLFLOW_EXPERIMENT`` (default
  ``ttalkkac``), one run named after the job. Refused at submission when no URI is configured.

No torch import at module level: the API checks a spec against its settings with this module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ttalkkac.environ import scoped_environ
from ttalkkac.errors import InvalidInput, JobCancelled, JobInterrupted
from ttalkkac.training.layout import TENSORBOARD_DIR

if TYPE_CHECKING:
    from ttalkkac.settings import Settings
    from ttalkkac.training.spec import ReportTo, TrainSpec

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "ttalkkac"


@dataclass(frozen=True)
class Tracking:
    """Where a run reports besides the job's events: the destination, not the choice.

    ``report_to`` comes from the job's spec; the MLflow server is the deployment's.
    """

    run_name: str
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = DEFAULT_EXPERIMENT

    @classmethod
    def from_settings(cls, settings: Settings, *, run_name: str) -> Tracking:
        return cls(
            run_name=run_name,
            mlflow_tracking_uri=settings.mlflow_tracking_uri,
            mlflow_experiment=settings.mlflow_experiment,
        )


def check_tracking(spec: TrainSpec, settings: Settings) -> None:
    """Refuse at submission what the run could not report to (the worker checks again)."""
    if spec.report_to == "mlflow" and not settings.mlflow_tracking_uri:
        raise InvalidInput(
            "hyperparameters.report_to is 'mlflow' but this service has no MLflow server: set "
            "MLFLOW_TRACKING_URI (e.g. http://mlflow:5000) or choose 'tensorboard' or 'none'",
            detail=[{"field": "body.hyperparameters.report_to", "value": "mlflow"}],
        )


def tensorboard_dir(out_dir: Path) -> Path:
    return Path(out_dir) / TENSORBOARD_DIR


@contextmanager
def tracking_env(report_to: ReportTo, tracking: Tracking, out_dir: Path) -> Iterator[None]:
    """The environment transformers' callbacks read, for the trainer's construction and run."""
    if report_to == "none":
        yield
        return
    if report_to == "tensorboard":
        folder = tensorboard_dir(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with scoped_environ({"TENSORBOARD_LOGGING_DIR": str(folder)}):
            yield
        return
    if not tracking.mlflow_tracking_uri:
        # A worker configured unlike the API that accepted the job: fail before training
        # rather than train for hours into a destination that does not exist.
        raise InvalidInput(
            "report_to is 'mlflow' but this worker has no MLFLOW_TRACKING_URI; set it on the "
            "worker as on the API"
        )
    import mlflow

    env = {
        "MLFLOW_TRACKING_URI": tracking.mlflow_tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": tracking.mlflow_experiment,
        "MLFLOW_RUN_ID": None,  # a run id left in the environment would be resumed instead
    }
    with scoped_environ(env):
        # The callback keeps a URI mlflow already holds in this process: set ours explicitly
        # (inside the scope: mlflow also exports it to the environment).
        mlflow.set_tracking_uri(tracking.mlflow_tracking_uri)
        try:
            yield
        except (JobCancelled, JobInterrupted):
            _end_mlflow_run(tracking.run_name, "KILLED")
            raise
        except BaseException:
            _end_mlflow_run(tracking.run_name, "FAILED")
            raise
        _end_mlflow_run(tracking.run_name, "FINISHED")


def _end_mlflow_run(run_name: str, status: str) -> None:
    """End the run with the status that says how training ended.

    The callback ends its run FINISHED at the end of training, also when training stopped
    early for a cancel or a shutdown; such a run is marked KILLED (or FAILED) here instead.
    """
    import mlflow

    try:
        if mlflow.active_run() is not None:
            mlflow.end_run(status=status)
            return
        last = mlflow.last_active_run()
        if status != "FINISHED" and last is not None and last.info.run_name == run_name:
            mlflow.MlflowClient().set_terminated(last.info.run_id, status=status)
    except Exception:
        # Tracking is a side channel: it never changes how the job ends.
        logger.warning("could not end the MLflow run %s (%s)", run_name, status, exc_info=True)
