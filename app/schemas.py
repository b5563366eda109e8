"""Every HTTP request and response model of the API, in one module.

Sections are owned by resource; SQLAlchemy models live in ``ttalkkac.store.models`` and are
converted here with ``model_validate(..., from_attributes=True)``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ttalkkac.training.spec import TrainSpec

# --- datasets and training jobs --------------------------------------------------------------


class DatasetPublic(BaseModel):
    """An uploaded dataset and the loader's statistics (every record, no quality filter)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    kind: str = Field(description="'gold' (results + meetings folders) or 'chat_jsonl'.")
    size_bytes: int = Field(description="Size of the upload as received.")
    records: int = Field(description="Usable records (train + validation) before any filter.")
    stats: dict[str, Any] = Field(description="Layout and the data loader's statistics.")
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> DatasetPublic:
        return cls(
            id=row.id,
            name=row.name,
            kind=row.kind,
            size_bytes=row.size_bytes,
            records=int((row.stats or {}).get("records", 0)),
            stats=row.stats or {},
            created_at=row.created_at,
        )


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


class JobCreate(BaseModel):
    """A LoRA fine-tuning job. Hyperparameters default to the fine-tuning guide's."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "dataset_id": "ds_0123456789abcdef",
                    "hyperparameters": {"max_steps": 60, "min_quality": 6.0, "lora": {"r": 16}},
                    "suffix": "meetings-v1",
                }
            ]
        },
    )

    dataset_id: str = Field(min_length=1, max_length=40)
    base_model: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="Hub id or a folder inside the data folder. Default: the service's.",
    )
    hyperparameters: TrainSpec = Field(default_factory=TrainSpec)
    suffix: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,40}$",
        description="Part of the registered adapter's name.",
    )


class JobProgress(BaseModel):
    step: int
    total_steps: int | None
    epoch: float | None


class JobError(BaseModel):
    type: str | None
    message: str | None


class JobPublic(BaseModel):
    id: str
    dataset_id: str
    base_model: str | None = Field(description="Resolved by the worker when not given.")
    status: Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
    hyperparameters: dict[str, Any]
    suffix: str | None
    progress: JobProgress
    metrics: dict[str, Any] = Field(description="Latest losses; final metrics when finished.")
    error: JobError | None
    attempts: int = Field(description="Deliveries that started running the job.")
    adapter_name: str | None = Field(description="The registered adapter, once succeeded.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> JobPublic:
        error = None
        if row.error_type or row.error_message:
            error = JobError(type=row.error_type, message=row.error_message)
        return cls(
            id=row.id,
            dataset_id=row.dataset_id,
            base_model=row.base_model,
            status=row.status,
            hyperparameters=row.hyperparameters or {},
            suffix=row.suffix,
            progress=JobProgress(step=row.step, total_steps=row.total_steps, epoch=row.epoch),
            metrics=row.metrics or {},
            error=error,
            attempts=row.attempts,
            adapter_name=row.adapter_name,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            updated_at=row.updated_at,
        )


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class JobEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int = Field(description="1, 2, ... per job; poll with ?after=<last seq>.")
    created_at: datetime
    level: str
    type: Literal["message", "metrics"]
    message: str
    data: dict[str, Any]


class JobEventsPublic(BaseModel):
    data: list[JobEventPublic]
    status: str = Field(description="The job's status when the events were read.")
    next_after: int = Field(description="Pass as ?after= to get only newer events.")


# --- adapters --------------------------------------------------------------------------------

# --- generation ------------------------------------------------------------------------------

# --- health ----------------------------------------------------------------------------------
