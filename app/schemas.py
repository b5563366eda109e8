"""Every HTTP request and response model of the API, in one module.

Sections are owned by resource; SQLAlchemy models live in ``ttalkkac.store.models`` and are
converted here with ``model_validate(..., from_attributes=True)``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from app.errors import without_data_dir
from ttalkkac.datasets import public_stats
from ttalkkac.evaluation.examples import MAX_SAMPLES, EvalSplit, Selection
from ttalkkac.inference.progress import ProgressKind
from ttalkkac.meetings import Utterance
from ttalkkac.notion import NotionParent, parse_notion_id
from ttalkkac.plan import ProjectPlan
from ttalkkac.text import invalid_unicode_at
from ttalkkac.training.spec import TrainSpec
from ttalkkac.urls import MAX_URL_CHARS, check_url


class RequestModel(BaseModel):
    """Base of every JSON request body: strings that are not valid Unicode are refused (422).

    pydantic lets a lone surrogate (``"\\ud800"`` in the JSON) through a plain ``str`` field;
    the store, the tokenizer and hashing then fail on it with a 500. The whole raw body is
    checked once here, nested models included, before any field is validated.
    """

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        where = invalid_unicode_at(data)
        if where is not None:
            raise PydanticCustomError(
                "string_unicode",
                "{where}: not valid Unicode (a lone surrogate such as \\ud800); send UTF-8 text",
                {"where": where},
            )
        return data


# --- datasets and training jobs --------------------------------------------------------------


class DatasetPublic(BaseModel):
    """An uploaded dataset and the loader's statistics (every record, no quality filter)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    kind: str = Field(description="'gold' (results + meetings folders) or 'chat_jsonl'.")
    size_bytes: int = Field(description="Size of the upload as received.")
    records: int = Field(description="Usable records (train + validation) before any filter.")
    stats: dict[str, Any] = Field(
        description="Layout and the data loader's statistics (paths relative to the dataset)."
    )
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> DatasetPublic:
        return cls(
            id=row.id,
            name=row.name,
            kind=row.kind,
            size_bytes=row.size_bytes,
            records=int((row.stats or {}).get("records", 0)),
            stats=public_stats(row),
            created_at=row.created_at,
        )


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


class JobCreate(RequestModel):
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
        description="One of ALLOWED_BASE_MODELS (default: the service's configured models) or "
        "a model folder inside the managed models folder. Default: the service's.",
    )
    hyperparameters: TrainSpec = Field(default_factory=TrainSpec)
    suffix: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,40}$",
        description="Part of the registered adapter's name.",
    )
    webhook_url: str | None = Field(
        default=None,
        max_length=MAX_URL_CHARS,
        description="http(s) URL told (a signed POST, see the README) when the job succeeds, "
        "fails or is cancelled. Needs WEBHOOK_SECRET on the service. Not shown by GET /train: "
        "it may carry a token.",
        examples=["https://ci.example.com/hooks/ttalkkac"],
    )

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)


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


class CheckpointPublic(BaseModel):
    """A complete checkpoint of a job, with its losses from the Trainer's state."""

    step: int = Field(description="Optimizer step it was saved at.")
    epoch: float | None
    train_loss: float | None = Field(description="Last training loss logged up to this step.")
    eval_loss: float | None = Field(description="Validation loss at this step, if evaluated.")
    size_bytes: int = Field(description="The folder's size (adapter, optimizer state, state).")
    is_best: bool = Field(description="Lowest validation loss so far (the one a run ships).")
    created_at: datetime

    @classmethod
    def from_checkpoint(cls, checkpoint: Any) -> CheckpointPublic:
        return cls(
            step=checkpoint.step,
            epoch=checkpoint.epoch,
            train_loss=checkpoint.train_loss,
            eval_loss=checkpoint.eval_loss,
            size_bytes=checkpoint.size_bytes,
            is_best=checkpoint.is_best,
            created_at=checkpoint.created_at,
        )


class CheckpointsPublic(BaseModel):
    data: list[CheckpointPublic]
    count: int
    keep_checkpoints: bool = Field(
        description="The job keeps them after it succeeds (hyperparameters.keep_checkpoints); "
        "otherwise they exist only while it runs or after it failed."
    )


class CheckpointAdapterCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Name of the new adapter. Default: the job's adapter name + '-step<step>'.",
        examples=["smollm2-meetings-v1-step40"],
    )

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str | None) -> str | None:
        if value == "base":
            raise ValueError("'base' is reserved for the base model")
        return value


# --- adapters --------------------------------------------------------------------------------


class AdapterPublic(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "smollm2-meetings-v1",
                    "base_model": "/data/models/SmolLM2-135M-Instruct",
                    "path": "DATA_DIR/jobs/job_3f9c2a1b7d4e8f60/adapter",
                    "rank": 16,
                    "job_id": "job_3f9c2a1b7d4e8f60",
                    "metrics": {"eval_loss": 1.42, "train_loss": 1.31},
                    "created_at": "2025-08-01T09:30:00Z",
                    "is_active": True,
                    "compatible": True,
                    "loaded": True,
                }
            ]
        },
    )

    name: str
    base_model: str = Field(description="Base model the adapter was trained on (id or path).")
    path: str = Field(
        description="Adapter folder (safetensors), as DATA_DIR/... inside the data folder."
    )
    rank: int = Field(description="LoRA rank r.")
    job_id: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    is_active: bool = Field(description="The default adapter of /generate.")
    compatible: bool = Field(
        default=True, description="Trained on the base model this service serves."
    )
    loaded: bool = Field(default=False, description="Already loaded by the engine.")
    evaluation: dict[str, Any] | None = Field(
        default=None,
        description="Scores of the adapter's latest finished evaluation (field_chrf 0-100, "
        "valid_rate and grounding 0-1, the generic floor's field_chrf), if any.",
    )

    @classmethod
    def of(cls, row: Any, data_dir: Path) -> AdapterPublic:
        """The stored adapter as clients see it: paths in the data folder start ``DATA_DIR/``.

        A client names adapters by name; where the server keeps its files is not its business.
        """
        adapter = cls.model_validate(row, from_attributes=True)
        adapter.path = without_data_dir(adapter.path, str(data_dir))
        adapter.base_model = without_data_dir(adapter.base_model, str(data_dir))
        return adapter


class AdaptersPublic(BaseModel):
    data: list[AdapterPublic]
    count: int
    active: str | None = Field(
        description="Name of the active adapter; null: /generate uses the base model."
    )
    base_model: str = Field(description="The base model this service serves.")


# --- generation ------------------------------------------------------------------------------

_MEETING_EXAMPLE = (
    "[00:01] 김민수: 오늘은 사내 회의록 요약 서비스 도입을 논의하겠습니다.\n"
    "[00:15] 이지은: 회의가 끝나면 요약과 할 일이 자동으로 노션에 올라가면 좋겠습니다.\n"
    "[00:32] 박준호: 다음 주 금요일까지 제가 음성 인식 API를 비교해서 공유하겠습니다.\n"
    "[00:48] 김민수: 좋습니다. 9월 말 시범 운영을 목표로 하고 PM은 제가 맡겠습니다."
)

_PLAN_EXAMPLE = {
    "project_name": "회의록 자동 요약 및 노션 연동 서비스",
    "project_purpose": "회의 종료 후 요약과 할 일을 자동으로 정리해 노션에 공유한다",
    "project_period": "2025.08.04 ~ 2025.09.30",
    "project_manager": "김민수",
    "core_objectives": ["회의 요약 자동화", "할 일과 담당자 자동 추출", "노션 페이지 자동 생성"],
    "core_idea": "음성 인식과 LLM으로 회의 내용을 구조화해 노션 기획안으로 변환",
    "idea_description": "회의 음성을 텍스트로 변환하고, 미세 조정된 LLM이 목적, 일정, 담당자를 "
    "추출해 노션 블록으로 만든다.",
    "execution_plan": [
        "1단계: 음성 인식 API 비교 (박준호, 다음 주 금요일까지)",
        "2단계: 요약 모델 미세 조정과 평가",
        "3단계: 노션 연동 개발과 9월 말 시범 운영",
    ],
    "expected_effects": ["회의록 작성 시간 단축", "할 일 누락 방지"],
}


class GenerateRequest(RequestModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"meeting": _MEETING_EXAMPLE},
                {
                    "meeting": [
                        {
                            "timestamp": "00:01",
                            "speaker": "김민수",
                            "text": "오늘은 회의록 요약 서비스 도입을 논의하겠습니다.",
                        },
                        {
                            "timestamp": "00:32",
                            "speaker": "박준호",
                            "text": "다음 주 금요일까지 음성 인식 API를 비교하겠습니다.",
                        },
                    ],
                    "adapter": "smollm2-meetings-v1",
                    "temperature": 0.2,
                    "max_tokens": 1536,
                },
            ]
        },
    )

    meeting: str | list[Utterance] = Field(
        description="The transcript: plain text, or utterances "
        "[{timestamp, speaker, text}] rendered as '[timestamp] speaker: text' lines."
    )
    adapter: str | None = Field(
        default=None,
        max_length=200,
        description="Adapter name. Omitted or null: the active adapter, else the base model. "
        '"base": the base model explicitly.',
    )
    temperature: float | None = Field(
        default=None, ge=0, le=2, description="Sampling temperature (default: DEFAULT_TEMPERATURE)."
    )
    max_tokens: int | None = Field(
        default=None,
        ge=16,
        le=16384,
        description="Answer budget in tokens (default: DEFAULT_MAX_TOKENS).",
    )
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="Sampling seed.")

    @field_validator("meeting", mode="before")
    @classmethod
    def _check_meeting(cls, value: object) -> object:
        """Clear messages for the common mistakes, before the type union reports both arms."""
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("meeting is empty (only whitespace)")
            return value
        if isinstance(value, list):
            if not value:
                raise ValueError("meeting: the utterance list is empty")
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise ValueError(f"meeting[{i}] must be an object with a 'text' field")
                text = item.get("text")
                if not isinstance(text, str) or not text.strip():
                    raise ValueError(f"meeting[{i}].text is missing or empty")
            return value
        raise ValueError("meeting must be a string or a list of utterances")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class Timings(BaseModel):
    queue_ms: float = Field(description="Waiting for the engine (scheduler queue or batch).")
    generate_ms: float = Field(description="The rest of the request: prefill, decoding, retries.")


class GenerateResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "plan": _PLAN_EXAMPLE,
                    "adapter": "smollm2-meetings-v1",
                    "base_model": "/data/models/SmolLM2-135M-Instruct",
                    "engine": "vllm",
                    "usage": {"prompt_tokens": 412, "completion_tokens": 356},
                    "timings": {"queue_ms": 3.2, "generate_ms": 4120.5},
                    "chunks": 1,
                    "warnings": [],
                    "request_id": "9f2c4e1a7b3d5c60",
                }
            ]
        }
    )

    plan: ProjectPlan = Field(description="The validated project plan.")
    adapter: str | None = Field(description="Adapter used; null: the base model.")
    base_model: str
    engine: Literal["vllm", "transformers"]
    usage: Usage
    timings: Timings
    chunks: int = Field(description="Chunks the meeting was planned in (1: not split).")
    warnings: list[str] = Field(default_factory=list)
    request_id: str | None = None
    plan_id: str | None = Field(
        default=None,
        description="The plan's record in the history (GET /plans/{id}); null when "
        "PLAN_HISTORY is off or the store could not keep it (a warning says so).",
    )


# --- plan history and Notion -----------------------------------------------------------------


class PlanRecordPublic(BaseModel):
    """A plan /generate returned, as kept: no meeting text, its SHA-256 instead."""

    id: str
    plan: ProjectPlan
    adapter: str | None = Field(description="Adapter used; null: the base model.")
    base_model: str
    engine: str
    meeting_sha256: str = Field(
        description="SHA-256 (hex) of the meeting's prompt text in UTF-8: plain text stripped "
        "of surrounding whitespace, utterances as '[timestamp] speaker: text' lines."
    )
    meeting_chars: int
    usage: Usage
    timings: Timings
    chunks: int
    warnings: list[str]
    request_id: str | None
    created_at: datetime
    notion_page_id: str | None = Field(description="The Notion page made from it, if any.")
    notion_page_url: str | None

    @classmethod
    def from_row(cls, row: Any) -> PlanRecordPublic:
        return cls(
            id=row.id,
            plan=row.plan,
            adapter=row.adapter,
            base_model=row.base_model,
            engine=row.engine,
            meeting_sha256=row.meeting_sha256,
            meeting_chars=row.meeting_chars,
            usage=Usage(**row.usage),
            timings=Timings(**row.timings),
            chunks=row.chunks,
            warnings=list(row.warnings or []),
            request_id=row.request_id,
            created_at=row.created_at,
            notion_page_id=row.notion_page_id,
            notion_page_url=row.notion_page_url,
        )


class PlanRecordsPublic(BaseModel):
    data: list[PlanRecordPublic]
    count: int


class NotionPublish(RequestModel):
    """Where the plan's Notion page goes: exactly one of the three parents."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "parent_page_id": "https://www.notion.so/Team-Plans-0123456789abcdef0123456789abcdef"
                },
                {"database_id": "0123456789abcdef0123456789abcdef"},
            ]
        },
    )

    parent_page_id: str | None = Field(
        default=None, max_length=500, description="A page's id or URL: the plan becomes a sub-page."
    )
    database_id: str | None = Field(
        default=None,
        max_length=500,
        description="A database's id or URL (one data source): the plan becomes a row; its "
        "title property gets the project name.",
    )
    data_source_id: str | None = Field(
        default=None, max_length=500, description="A data source's id (databases with several)."
    )

    @field_validator("parent_page_id", "database_id", "data_source_id")
    @classmethod
    def _notion_id(cls, value: str | None) -> str | None:
        return None if value is None else parse_notion_id(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> NotionPublish:
        given = [k for k in ("parent_page_id", "database_id", "data_source_id") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of parent_page_id, database_id, data_source_id"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    def to_parent(self) -> NotionParent:
        if self.parent_page_id:
            return NotionParent("page_id", self.parent_page_id)
        if self.database_id:
            return NotionParent("database_id", self.database_id)
        return NotionParent("data_source_id", self.data_source_id or "")


class NotionPagePublic(BaseModel):
    plan_id: str
    page_id: str
    url: str | None = Field(description="The page in Notion.")
    parent: dict[str, Any] | None = Field(description="Where it was created (Notion's form).")
    blocks: int = Field(description="Blocks written to the page.")
    created: bool = Field(
        description="true: made by this call; false: the plan already had this page (a plan "
        "gets one page, whatever parent a later call names)."
    )


class GenerateProgress(BaseModel):
    """One ``event: progress`` of ``POST /generate/stream`` (``ttalkkac.inference.progress``)."""

    kind: ProgressKind = Field(
        description="admitted: waiting for the engine; planned: the meeting is split into "
        "`chunks`; tokens: a chunk's answer grew (`text` so far); retry: a chunk's answer did "
        "not validate (`message`), a new one starts; chunk_done: a chunk's answer validated."
    )
    chunks: int = Field(description="Chunks of the meeting (0 until planned).")
    chunk: int = Field(description="1-based chunk the event is about (0: the whole request).")
    attempt: int = Field(description="1: the chunk's first answer; 2: its retry.")
    tokens: int = Field(description="Completion tokens so far, every chunk and attempt.")
    text: str = Field(description="The chunk's answer: partial JSON, whole at chunk_done.")
    message: str = Field(description="retry: why the answer was refused.")


class GenerateStreamResult(GenerateResponse):
    """The ``event: plan`` that ends a successful stream: ``/generate``'s answer, and more."""

    markdown: str = Field(description="The plan as `?format=markdown` renders it.")


# --- health ----------------------------------------------------------------------------------


class HealthPublic(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class ReadyStatus(BaseModel):
    """What ``/ready`` tells a caller without an API key when keys are configured."""

    ready: bool = Field(description="Engine loaded and a warm-up generation succeeded.")
    state: str = Field(
        description="created | preparing (merging the active adapter) | loading | warming | "
        "ready | restarting | engine_dead | failed | stopped | disabled"
    )


class ReadyPublic(ReadyStatus):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "ready": True,
                    "state": "ready",
                    "engine": "vllm",
                    "mode": "merged",
                    "base_model": "/data/models/SmolLM2-135M-Instruct",
                    "active_adapter": "smollm2-meetings-v1",
                    "merged_adapter": "smollm2-meetings-v1",
                    "switching_to": None,
                    "last_switch_s": 1.9,
                    "last_switch_method": "in_place",
                    "switch_error": None,
                    "lora_engine": "not started",
                    "loaded_adapters": ["smollm2-meetings-v1"],
                    "waiting": 0,
                    "max_waiting_requests": 64,
                    "error": None,
                }
            ]
        }
    )

    engine: str
    mode: str = Field(
        description="How adapters are served: 'merged' (the active adapter merged into the "
        "weights; others per request on the LoRA engine) or 'lora' (every adapter per request)."
    )
    base_model: str
    active_adapter: str | None = None
    merged_adapter: str | None = Field(
        default=None,
        description="Merged mode: the adapter in the weights serving new requests (null: the "
        "base weights). Equal to active_adapter once a switch has finished.",
    )
    switching_to: str | None = Field(
        default=None, description="Merged mode: the adapter a switch in progress moves to."
    )
    last_switch_s: float | None = Field(
        default=None,
        description="Merged mode: seconds the last switch took (merge + load in place, or "
        "merge + a new engine's start).",
    )
    last_switch_method: Literal["in_place", "new_engine"] | None = Field(
        default=None,
        description="Merged mode: how the last switch reached the engine: in_place (the merged "
        "weights loaded into the running engine) or new_engine (a second engine swapped in).",
    )
    switch_error: str | None = Field(
        default=None, description="Merged mode: why the last switch failed, if it did."
    )
    lora_engine: str | None = Field(
        default=None,
        description="Merged mode: the engine for other adapters and the base model (base "
        "weights + LoRA): not started | starting | ready | failed: <why> | off (ENABLE_LORA=false).",
    )
    loaded_adapters: list[str] = Field(default_factory=list)
    waiting: int = Field(description="Generate requests in the engine now.")
    max_waiting_requests: int
    error: str | None = None


# --- evaluations -----------------------------------------------------------------------------


class EvaluationCreate(RequestModel):
    """Score an adapter (or the base model) against a dataset's gold plans."""

    model_config = ConfigDict(extra="forbid")

    adapter: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._-]+$",
        description='An adapter name, or "base" for the base model.',
        examples=["base"],
    )
    dataset_id: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")
    split: EvalSplit = Field(
        default=EvalSplit.validation,
        description="validation: the meetings a training job holds out (val_fraction 0.1, "
        "seed 42 by default, see `selection`); all: every record.",
    )
    max_samples: int = Field(default=24, ge=1, le=MAX_SAMPLES)
    max_meeting_chars: int | None = Field(
        default=None,
        ge=200,
        le=200_000,
        description="Meetings are shortened to this (EVAL_MAX_MEETING_CHARS when null).",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Example order and decoding.")
    selection: Selection = Field(
        default_factory=Selection,
        description="How the dataset is split into train/validation (a training job's spec).",
    )
    webhook_url: str | None = Field(
        default=None,
        max_length=MAX_URL_CHARS,
        description="http(s) URL told (a signed POST, see the README) when the evaluation "
        "succeeds, fails or is cancelled. Needs WEBHOOK_SECRET on the service. Not shown by "
        "GET /evaluations: it may carry a token.",
        examples=["https://ci.example.com/hooks/ttalkkac"],
    )

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)


class WebhookAttemptPublic(BaseModel):
    """One attempt to deliver a webhook (a job's events carry the same in ``data.webhook``)."""

    delivery: str = Field(description="The Ttalkkac-Delivery id, the same on every retry.")
    event: str = Field(examples=["evaluation.succeeded"])
    url: str = Field(description="Without its query string or user info (they may be secret).")
    attempt: int
    max_attempts: int
    status: int | None = Field(description="The receiver's HTTP status; null: no answer.")
    error: str | None
    delivered: bool
    at: datetime | None = None


class EvaluationScores(BaseModel):
    n: int
    field_chrf: float = Field(description="Mean over the nine fields of chrF / item F1, 0-100.")
    valid_rate: float = Field(description="Share of examples with a schema-valid plan, 0-1.")
    grounding: float = Field(description="Manager, names and period grounded in the meeting, 0-1.")
    fields: dict[str, float]
    validity: dict[str, int] = Field(description="first_try / retried / compact / invalid counts.")
    manager_grounded_rate: float
    names_grounded: float | None
    period_is_range_rate: float


class EvaluationSummary(EvaluationScores):
    generic_floor: EvaluationScores | None = Field(
        description="A gold plan of another meeting scored against each gold: the template's "
        "score, which a model must beat to have learned anything about the meeting."
    )
    latency_ms_p50: float | None
    completion_tokens_mean: float | None


class EvaluationRowPublic(BaseModel):
    index: int
    record_id: str
    meeting_id: str
    meeting_chars: int
    validity: Literal["first_try", "retried", "compact", "invalid"]
    score: dict[str, Any]
    floor: dict[str, Any] | None
    floor_record_id: str | None
    plan: dict[str, Any] | None
    latency_ms: float
    completion_tokens: int
    chunks: int
    warnings: list[str]
    error: str | None


class EvaluationPublic(BaseModel):
    id: str
    adapter: str
    dataset_id: str
    split: EvalSplit
    max_samples: int
    max_meeting_chars: int
    seed: int
    selection: dict[str, Any]
    training_job_id: str | None = Field(description="The training job that queued it, if any.")
    base_model: str | None
    status: Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
    progress: JobProgress
    summary: EvaluationSummary | None = Field(
        description="Aggregate scores: final once succeeded, of the finished rows otherwise."
    )
    error: JobError | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    rows: list[EvaluationRowPublic] | None = Field(
        default=None, description="Per-example results (GET /evaluations/{id} only)."
    )
    webhooks: list[WebhookAttemptPublic] | None = Field(
        default=None,
        description="Every attempt to deliver its webhooks so far, oldest first "
        "(GET /evaluations/{id} only).",
    )

    @classmethod
    def from_row(
        cls,
        row: Any,
        rows: list[Any] | None = None,
        webhooks: list[dict[str, Any]] | None = None,
    ) -> EvaluationPublic:
        error = None
        if row.error_type or row.error_message:
            error = JobError(type=row.error_type, message=row.error_message)
        return cls(
            id=row.id,
            adapter=row.adapter,
            dataset_id=row.dataset_id,
            split=row.split,
            max_samples=row.max_samples,
            max_meeting_chars=row.max_meeting_chars,
            seed=row.seed,
            selection=row.selection or {},
            training_job_id=row.training_job_id,
            base_model=row.base_model,
            status=row.status,
            progress=JobProgress(step=row.done, total_steps=row.total, epoch=None),
            summary=row.summary or None,
            error=error,
            attempts=row.attempts,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            rows=None if rows is None else [r.result for r in rows],
            webhooks=None if webhooks is None else [WebhookAttemptPublic(**w) for w in webhooks],
        )


class EvaluationsPublic(BaseModel):
    data: list[EvaluationPublic]
    count: int
