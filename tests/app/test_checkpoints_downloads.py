"""Checkpoints, adapter and TensorBoard downloads over HTTP, on a real tiny training's folder.

No worker: the job row is made in the store and its folder is what ``train_lora`` wrote for a
run with ``keep_checkpoints`` and ``report_to="tensorboard"`` (trained once per module).
"""

from __future__ import annotations

import io
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.ttalkkac.training.conftest import RecordingReporter
from tests.utils.training_data import tiny_records
from ttalkkac import jobs
from ttalkkac.store import crud
from ttalkkac.training.spec import TrainSpec

pytestmark = pytest.mark.slow

SPEC = TrainSpec(
    max_steps=4,
    gradient_accumulation_steps=1,
    logging_steps=1,
    eval_steps=2,
    max_seq_len=512,
    learning_rate=1e-2,
    keep_checkpoints=True,
    report_to="tensorboard",
)


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, one_thread) -> Path:
    from ttalkkac.training.trainer import TrainData, train_lora

    records = tiny_records(4)
    out = tmp_path_factory.mktemp("job")
    train_lora(
        base_model=str(tiny_model_dir),
        data=TrainData(records[:3], records[3:], {}),
        spec=SPEC,
        out_dir=out,
        reporter=RecordingReporter(),
    )
    return out


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    from app.main import create_app
    from ttalkkac.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", serving_enabled=False, warmup=False)
    with TestClient(create_app(settings)) as c:
        yield c


def finished_job(client: TestClient, trained: Path, base_model: Path) -> str:
    """A job row whose folder is the trained run's, as a worker would have left it."""
    state = client.app.state
    with state.db.session() as session:
        dataset = crud.create_dataset(session, name="d", kind="gold", path="/nowhere")
        job = jobs.create_job(session, dataset_id=dataset.id, spec=SPEC, suffix="demo")
        job.base_model = str(base_model)
        job_id = job.id
    shutil.copytree(trained, jobs.job_dir(state.settings, job_id))
    return job_id


def test_checkpoints_are_listed_with_losses_and_sizes(
    client: TestClient, trained: Path, tiny_model_dir: Path
) -> None:
    job_id = finished_job(client, trained, tiny_model_dir)
    body = client.get(f"/train/{job_id}/checkpoints").json()
    assert body["count"] == 2 and body["keep_checkpoints"] is True
    assert [c["step"] for c in body["data"]] == [2, 4]
    for checkpoint in body["data"]:
        assert checkpoint["train_loss"] > 0 and checkpoint["eval_loss"] > 0
        assert checkpoint["size_bytes"] > 0
    assert sum(c["is_best"] for c in body["data"]) == 1
    assert client.get("/train/job_missing/checkpoints").status_code == 404


def test_register_a_checkpoint_then_download_it(
    client: TestClient, trained: Path, tiny_model_dir: Path
) -> None:
    job_id = finished_job(client, trained, tiny_model_dir)
    created = client.post(f"/train/{job_id}/checkpoints/2/adapter")
    assert created.status_code == 201, created.text
    adapter = created.json()
    assert adapter["name"].endswith("-step2") and adapter["job_id"] == job_id
    assert adapter["metrics"]["step"] == 2
    assert adapter["name"] in [a["name"] for a in _adapters(client)]

    again = client.post(f"/train/{job_id}/checkpoints/2/adapter")
    assert again.status_code == 409 and "already exists" in again.json()["error"]["message"]
    named = client.post(f"/train/{job_id}/checkpoints/4/adapter", json={"name": "picked"})
    assert named.status_code == 201 and named.json()["name"] == "picked"
    missing = client.post(f"/train/{job_id}/checkpoints/3/adapter", json={"name": "x"})
    assert missing.status_code == 404 and "step 3" in missing.json()["error"]["message"]
    assert client.post("/train/job_missing/checkpoints/2/adapter").status_code == 404
    bad = client.post(f"/train/{job_id}/checkpoints/2/adapter", json={"name": "a b"})
    assert bad.status_code == 422

    download = client.get(f"/adapters/{adapter['name']}/download")
    assert download.status_code == 200, download.text
    assert download.headers["content-type"] == "application/zip"
    assert f'filename="{adapter["name"]}.zip"' in download.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    assert sorted(archive.namelist()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    source = Path(trained) / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors"
    assert archive.read("adapter_model.safetensors") == source.read_bytes()
    assert client.get("/adapters/nothing/download").status_code == 404


def test_the_downloaded_adapter_loads_with_peft(
    client: TestClient, trained: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job_id = finished_job(client, trained, tiny_model_dir)
    name = client.post(f"/train/{job_id}/checkpoints/4/adapter").json()["name"]
    zipfile.ZipFile(io.BytesIO(client.get(f"/adapters/{name}/download").content)).extractall(
        tmp_path / "unzipped"
    )
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, tmp_path / "unzipped")
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in model.named_parameters())


def test_merged_download_after_merged_serving_built_the_copy(
    client: TestClient, trained: Path, tiny_model_dir: Path
) -> None:
    from ttalkkac.adapters import ref_from_row
    from ttalkkac.inference.merge import ensure_merged

    job_id = finished_job(client, trained, tiny_model_dir)
    name = client.post(f"/train/{job_id}/checkpoints/4/adapter").json()["name"]
    refused = client.get(f"/adapters/{name}/download?merged=true")
    assert refused.status_code == 404 and "activate" in refused.json()["error"]["message"]

    state = client.app.state
    with state.db.session() as session:
        ref = ref_from_row(
            crud.get_adapter(session, name=name), state.settings, str(tiny_model_dir)
        )
    merged = ensure_merged(str(tiny_model_dir), ref)  # what an activation does in merged mode
    (merged / "stray.bin").write_bytes(b"pickle")
    download = client.get(f"/adapters/{name}/download?merged=true")
    assert download.status_code == 200, download.text
    assert f'filename="{name}-merged.zip"' in download.headers["content-disposition"]
    names = set(zipfile.ZipFile(io.BytesIO(download.content)).namelist())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt"))]


def test_tensorboard_zip_holds_the_event_files(
    client: TestClient, trained: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    job_id = finished_job(client, trained, tiny_model_dir)
    download = client.get(f"/train/{job_id}/tensorboard.zip")
    assert download.status_code == 200, download.text
    zipfile.ZipFile(io.BytesIO(download.content)).extractall(tmp_path / "tb")
    accumulator = EventAccumulator(str(tmp_path / "tb"))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("train/loss")] == [1, 2, 3, 4]
    shutil.rmtree(jobs.job_dir(client.app.state.settings, job_id) / "tensorboard")
    gone = client.get(f"/train/{job_id}/tensorboard.zip")
    assert gone.status_code == 404 and "report_to" in gone.json()["error"]["message"]
    assert client.get("/train/job_missing/tensorboard.zip").status_code == 404


def test_report_to_mlflow_without_a_server_is_refused_at_submission(client: TestClient) -> None:
    response = client.post(
        "/train", json={"dataset_id": "ds_x", "hyperparameters": {"report_to": "mlflow"}}
    )
    assert response.status_code == 422, response.text
    assert "MLFLOW_TRACKING_URI" in response.json()["error"]["message"]
    response = client.post(
        "/train", json={"dataset_id": "ds_x", "hyperparameters": {"report_to": "wandb"}}
    )
    assert response.status_code == 422
    assert "body.hyperparameters.report_to" in response.json()["error"]["message"]


def _adapters(client: TestClient) -> list[dict]:
    state = client.app.state
    with state.db.session() as session:
        return [{"name": row.name} for row in crud.list_adapters(session)]
