"""Experiment tracking through transformers' integrations, read back with the real tools.

TensorBoard: its own event reader on the files a tiny training wrote. MLflow: a local
``mlflow server`` (SQLite store) that a tiny training reports to, read back with
``mlflow.MlflowClient``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ttalkkac.training.conftest import RecordingReporter
from tests.utils.training_data import tiny_records
from ttalkkac.errors import InvalidInput, JobCancelled
from ttalkkac.settings import Settings
from ttalkkac.training.spec import TrainSpec
from ttalkkac.training.tracking import Tracking, check_tracking

TRACKING_ENV = ("TENSORBOARD_LOGGING_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")


def tiny_spec(**kw) -> TrainSpec:
    values = {
        "max_steps": 4,
        "gradient_accumulation_steps": 1,
        "logging_steps": 1,
        "eval_steps": 2,
        "max_seq_len": 512,
        "learning_rate": 1e-2,
    }
    return TrainSpec(**{**values, **kw})


def train(model_dir: Path, out: Path, spec: TrainSpec, **kw) -> dict:
    from ttalkkac.training.trainer import TrainData, train_lora

    records = tiny_records(4)
    return train_lora(
        base_model=str(model_dir),
        data=TrainData(records[:3], records[3:], {}),
        spec=spec,
        out_dir=out,
        reporter=kw.pop("reporter", None) or RecordingReporter(),
        **kw,
    )


def test_report_to_defaults_to_none_and_refuses_unknown_values() -> None:
    from pydantic import ValidationError

    assert TrainSpec().report_to == "none"
    with pytest.raises(ValidationError, match="report_to"):
        TrainSpec(report_to="wandb")


def test_mlflow_is_refused_without_a_tracking_uri(tmp_path: Path) -> None:
    spec = TrainSpec(report_to="mlflow")
    with pytest.raises(InvalidInput, match="MLFLOW_TRACKING_URI"):
        check_tracking(spec, Settings(data_dir=tmp_path))
    check_tracking(spec, Settings(data_dir=tmp_path, mlflow_tracking_uri="http://mlflow:5000"))
    check_tracking(TrainSpec(report_to="tensorboard"), Settings(data_dir=tmp_path))


def test_a_worker_without_a_tracking_uri_refuses_before_training(tmp_path: Path) -> None:
    from ttalkkac.training.tracking import tracking_env

    with (
        pytest.raises(InvalidInput, match="this worker has no MLFLOW_TRACKING_URI"),
        tracking_env("mlflow", Tracking(run_name="job_x"), tmp_path),
    ):
        pytest.fail("entered the run")


def test_the_environment_is_restored_when_the_run_fails(tmp_path: Path, monkeypatch) -> None:
    from ttalkkac.training.tracking import tracking_env

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "/somewhere/else")
    with pytest.raises(RuntimeError), tracking_env("tensorboard", Tracking("job_x"), tmp_path):
        assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "tensorboard")
        assert (tmp_path / "tensorboard").is_dir()
        raise RuntimeError("training failed")
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == "/somewhere/else"


@pytest.mark.slow
def test_tensorboard_event_files_hold_the_losses(
    tiny_model_dir: Path, tmp_path: Path, one_thread
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    before = {key: os.environ.get(key) for key in TRACKING_ENV}
    results = train(tiny_model_dir, tmp_path, tiny_spec(report_to="tensorboard"))
    assert {key: os.environ.get(key) for key in TRACKING_ENV} == before, "environment restored"

    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events, list(tmp_path.rglob("*"))
    accumulator = EventAccumulator(str(tmp_path / "tensorboard"))
    accumulator.Reload()
    scalars = accumulator.Tags()["scalars"]
    assert {"train/loss", "eval/loss", "train/learning_rate"} <= set(scalars), scalars
    train_loss = accumulator.Scalars("train/loss")
    assert [e.step for e in train_loss] == [1, 2, 3, 4]
    assert all(e.value > 0 for e in train_loss)
    assert [e.step for e in accumulator.Scalars("eval/loss")] == [2, 4]
    # The files live beside the adapter, not under checkpoints/ (removed at the end).
    assert not (tmp_path / "checkpoints").exists()
    assert results["global_step"] == 4


@pytest.mark.slow
def test_no_tracking_writes_no_event_files(
    tiny_model_dir: Path, tmp_path: Path, one_thread
) -> None:
    train(tiny_model_dir, tmp_path, tiny_spec(max_steps=2))
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.utils.mlflow_server import mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


def runs_named(uri: str, experiment: str, run_name: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"experiment {experiment} was not created"
    return client.search_runs(
        [found.experiment_id], filter_string=f"attributes.run_name = '{run_name}'"
    )


@pytest.mark.slow
def test_mlflow_run_is_named_after_the_job_and_holds_the_losses(
    mlflow_uri: str, tiny_model_dir: Path, tmp_path: Path, one_thread, run_id: str
) -> None:
    from mlflow import MlflowClient

    experiment = f"ttalkkac-test-{run_id}"
    tracking = Tracking(
        run_name="job_0123456789abcdef",
        mlflow_tracking_uri=mlflow_uri,
        mlflow_experiment=experiment,
    )
    before = {key: os.environ.get(key) for key in TRACKING_ENV}
    train(tiny_model_dir, tmp_path, tiny_spec(report_to="mlflow"), tracking=tracking)
    assert {key: os.environ.get(key) for key in TRACKING_ENV} == before, "environment restored"

    client = MlflowClient(mlflow_uri)
    runs = runs_named(mlflow_uri, experiment, "job_0123456789abcdef")
    assert len(runs) == 1, "one run per training, none for the final evaluation"
    run = runs[0]
    assert run.info.status == "FINISHED"
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in losses) == [1, 2, 3, 4]
    assert all(m.value > 0 for m in losses)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "eval_loss")) == [
        2,
        4,
    ]
    assert run.data.params["learning_rate"] == "0.01"  # the Trainer's arguments as params
    every = client.search_runs([run.info.experiment_id])
    assert len(every) == 1, [r.info.run_name for r in every]


@pytest.mark.slow
def test_a_cancelled_run_is_marked_killed_in_mlflow(
    mlflow_uri: str, tiny_model_dir: Path, tmp_path: Path, one_thread, run_id: str
) -> None:
    experiment = f"ttalkkac-test-{run_id}"
    tracking = Tracking(
        run_name="job_cancelled", mlflow_tracking_uri=mlflow_uri, mlflow_experiment=experiment
    )
    with pytest.raises(JobCancelled):
        train(
            tiny_model_dir,
            tmp_path,
            tiny_spec(report_to="mlflow"),
            tracking=tracking,
            reporter=RecordingReporter(cancel_at_step=2),
        )
    (run,) = runs_named(mlflow_uri, experiment, "job_cancelled")
    assert run.info.status == "KILLED"
