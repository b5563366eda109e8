"""Every setting of the service, in one place.

Read from the environment (and ``.env`` when ``get_settings()`` is used); tests build
``Settings(...)`` explicitly so that nothing on a developer's machine leaks into them.
The README's settings table is checked against this module by a test.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ttalkkac.urls import check_url


class Queue(StrEnum):
    """Celery queues. One for now: training jobs run one at a time per GPU worker."""

    training = "training"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # --- storage -------------------------------------------------------------------------
    data_dir: Path = Field(
        default=Path("var"),
        description="Managed data folder: datasets, job outputs, models, SQLite files.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store. Default: SQLite file DATA_DIR/ttalkkac.db.",
    )

    # --- broker and worker ---------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description=(
            "Celery broker. Unset: redis://127.0.0.1:6379/0 if a Redis answers there, else an "
            "embedded SQLite broker under DATA_DIR."
        ),
    )
    training_queue: str = Field(
        default=Queue.training.value,
        description="Name of the Celery queue for training jobs (tests use a unique one).",
    )
    max_job_attempts: int = Field(
        default=3, ge=1, le=20, description="Deliveries of one job before it is marked failed."
    )
    job_time_limit_s: int = Field(
        default=48 * 3600,
        ge=60,
        description="Longest a training job may run; the broker visibility timeout exceeds it.",
    )

    # --- training jobs and datasets (crash recovery, upload limits) ------------------------
    job_heartbeat_s: int = Field(
        default=30,
        ge=1,
        description="How often the process running a job or an evaluation records it is alive.",
    )
    job_stale_after_s: int = Field(
        default=300,
        ge=5,
        description="A running job or evaluation whose process is gone, or silent this long, is "
        "recovered.",
    )
    job_sweep_interval_s: int = Field(
        default=60, ge=1, description="How often a worker looks for orphaned jobs (and at start)."
    )
    job_resend_queued_after_s: int = Field(
        default=300,
        ge=10,
        description="A job queued this long while no job runs lost its queue message (the API "
        "died before sending it, Redis restarted without persistence): the sweep sends it again.",
    )
    broker_key_prefix: str = Field(
        default="",
        description="Prefix of every broker key in Redis (separates deployments sharing one).",
    )
    max_dataset_files: int = Field(
        default=50_000, ge=1, description="Most entries in an uploaded dataset zip."
    )
    max_dataset_unpacked_bytes: int = Field(
        default=2 * 1024**3, ge=1024, description="Largest unpacked size of a dataset zip (bytes)."
    )

    # --- retention (files the service no longer needs) -----------------------------------
    checkpoint_retention: Literal["delete_on_end", "keep"] = Field(
        default="delete_on_end",
        description=(
            "Checkpoints of ended jobs. 'delete_on_end': removed once a job has succeeded, "
            "failed or been cancelled (an ended job is never resumed; the adapter, results and "
            "loss plot stay), by the worker's sweep and at API start, unless the job was "
            "submitted with hyperparameters.keep_checkpoints. 'keep': left for manual "
            "inspection or resumption."
        ),
    )
    merged_retention: Literal["active_only", "keep"] = Field(
        default="active_only",
        description=(
            "Merged serving's copies of the base model (one <adapter>.merged folder per adapter "
            "ever activated, the size of the base model). 'active_only': at API start, those of "
            "adapters that are not active are removed (activating one again merges it again). "
            "'keep': kept, so re-activating an adapter skips the merge."
        ),
    )
    leftover_min_age_s: int = Field(
        default=900,
        ge=60,
        description=(
            "At API start, staging leftovers of crashed processes (.incoming-* uploads, "
            "*.tmp-* merges, *.build-* demo models, .deleted-* removals) untouched this long "
            "are removed; younger ones may belong to a process still writing them."
        ),
    )

    # --- models --------------------------------------------------------------------------
    base_model: str | None = Field(
        default=None,
        description=(
            "Base model id or path for training and serving. Default: the SmolLM2-135M demo "
            "model on a CPU host, GPU_BASE_MODEL on a GPU host."
        ),
    )
    gpu_base_model: str = Field(
        default="Qwen/Qwen3-4B",
        description="Default base model when a CUDA GPU is present and BASE_MODEL is unset.",
    )
    allowed_base_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated hub ids or paths a training request may name as base_model. "
            "Empty: BASE_MODEL, GPU_BASE_MODEL and the demo model. Folders with a config.json "
            "inside DATA_DIR/models are allowed too."
        ),
    )

    # --- serving -------------------------------------------------------------------------
    serving_enabled: bool = Field(
        default=True,
        description=(
            "Load the generation engine in the API process (false: /generate answers 503; "
            "for an API that only manages training, and for tests that need no engine)."
        ),
    )
    serving_engine: Literal["vllm", "transformers"] = Field(
        default="vllm", description="Generation engine of the API."
    )
    serving_mode: Literal["auto", "merged", "lora"] = Field(
        default="auto",
        description=(
            "How adapters are served. 'merged': the active adapter merged into the weights "
            "(cached next to it; the engine is switched when another is activated), others "
            "per request on a second engine. 'lora': every adapter per request. 'auto': merged "
            "on a CPU host, lora on a GPU host."
        ),
    )
    enable_lora: bool = Field(
        default=True,
        description=(
            "Merged mode: serve adapters other than the active one, and the base model, per "
            "request on a second engine (base weights + LoRA) started by the first such request. "
            "false: only the active adapter (others get 409)."
        ),
    )
    adapter_sync_interval_s: float = Field(
        default=5.0,
        ge=0.5,
        le=3600,
        description="Merged mode: how often the registry is read for a newly activated adapter.",
    )
    adapter_switch: Literal["in_place", "new_engine"] = Field(
        default="in_place",
        description=(
            "Merged mode: how an activation reaches the engine. 'in_place': the merged weights "
            "are loaded into the running vLLM engine (plans in flight finish first; about a "
            "second, one engine); 'new_engine': a second engine is started and swapped in "
            "(minutes on a CPU, two engines' memory meanwhile). in_place falls back to "
            "new_engine where it cannot work (the transformers engine, an adapter that trains "
            "the embeddings or the LM head)."
        ),
    )
    max_lora_rank: int = Field(default=16, ge=1, le=256, description="Largest servable LoRA r.")
    max_loras: int = Field(default=4, ge=1, le=64, description="Adapters resident in vLLM at once.")
    max_model_len: int = Field(
        default=8192, ge=256, description="Context window the engine is started with (tokens)."
    )
    enforce_eager: bool = Field(
        default=False,
        description=(
            "vLLM: skip torch.compile and CUDA graphs. Engines start faster (the demo model on "
            "2 CPU cores: about 25 s instead of 70 s) and generate slower. vLLM's CPU build "
            "never compiles an engine that has LoRA enabled."
        ),
    )
    serving_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto",
        description=(
            "dtype the serving engines compute in. 'auto': bfloat16 on a CPU that has it in "
            "hardware (AVX-512 bf16 or AMX), float32 on other CPUs (bfloat16 is emulated there: "
            "matmuls measured 40x slower), the model's own dtype on a GPU."
        ),
    )
    gpu_memory_utilization: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="vLLM memory fraction (of RAM on the CPU build, of VRAM on a GPU).",
    )
    vllm_cpu_cores: Literal["all", "reserve_one"] = Field(
        default="all",
        description=(
            "vLLM's CPU build: 'all' binds the engine's compute threads to every core this "
            "process may use (VLLM_CPU_NUM_OF_RESERVED_CPU=0); 'reserve_one' is vLLM's own "
            "default, one core kept for its scheduler process (on 2 cores the model computes "
            "on one). An explicit VLLM_CPU_OMP_THREADS_BIND in the environment wins."
        ),
    )
    cpu_kvcache_space_gb: int = Field(
        default=1, ge=1, description="KV cache size in GiB for vLLM's CPU build."
    )
    max_waiting_requests: int = Field(
        default=64, ge=1, description="Generate requests queued or running before 503."
    )
    max_engine_requests: int = Field(
        default=256,
        ge=1,
        description="Engine requests (one per chunk of a meeting) in flight before a new "
        "generate request is answered 503: a long meeting costs what its chunks cost.",
    )
    max_chunks_per_request: int = Field(
        default=32,
        ge=1,
        description="Most chunks one meeting may be split into; more is 422 (shorten the "
        "meeting or ask for fewer max_tokens, which leaves more room per chunk).",
    )
    generate_timeout_s: float = Field(
        default=900,
        gt=0,
        description="Deadline of one generate request (all its chunks and retries); past it "
        "the engine's work is aborted and the answer is 504.",
    )
    default_max_tokens: int = Field(
        default=2048, ge=64, description="Default answer budget of /generate (tokens)."
    )
    default_temperature: float = Field(
        default=0.2, ge=0, le=2, description="Default sampling temperature of /generate."
    )
    repetition_penalty: float = Field(
        default=1.1,
        ge=1,
        le=2,
        description=(
            "Penalty on repeated tokens (1: none). Small untrained models loop inside the JSON "
            "(the same list item, digit runs) without it."
        ),
    )
    repetition_stop_max_pattern: int = Field(
        default=32,
        ge=0,
        le=256,
        description=(
            "End an answer early when it loops: its last tokens are one pattern of up to this "
            "many tokens, repeated REPETITION_STOP_MIN_COUNT times. Such an answer cannot "
            "validate; it is retried as a compact plan at once instead of after max_tokens. "
            "0: off. Measured on the demo adapter (bench/results/20261203-140541-quality.md): "
            "evaluation time 716 -> 489 s, every answer still valid."
        ),
    )
    repetition_stop_min_count: int = Field(
        default=8,
        ge=2,
        le=64,
        description="Repeats that make a loop (REPETITION_STOP_MAX_PATTERN).",
    )
    max_meeting_chars: int = Field(
        default=200_000, ge=1000, description="Hard limit on a meeting's length (413 beyond)."
    )
    warmup: bool = Field(default=True, description="Run one short generation at start-up.")

    # --- evaluation (scoring adapters against gold plans) ---------------------------------
    eval_after_training: bool = Field(
        default=True,
        description="After a job succeeds, evaluate its adapter and the base model on the "
        "dataset's validation split (run by the API's evaluation runner).",
    )
    eval_after_training_samples: int = Field(
        default=24, ge=1, le=500, description="Validation examples of that evaluation."
    )
    eval_max_meeting_chars: int = Field(
        default=4000,
        ge=200,
        le=200_000,
        description="Meetings are shortened to this for evaluations unless a request says.",
    )
    eval_concurrency: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Examples of one evaluation generated at once (the engine batches them).",
    )
    eval_runner_enabled: bool = Field(
        default=True,
        description="Run queued evaluations in this API process (needs SERVING_ENABLED).",
    )
    eval_poll_s: float = Field(
        default=2.0, gt=0, le=300, description="How often the runner looks for queued evaluations."
    )

    # --- plan history and Notion ---------------------------------------------------------
    plan_history: bool = Field(
        default=True,
        description="Keep every plan /generate returns (GET /plans): the plan, adapter, base "
        "model, timings, warnings and a SHA-256 of the meeting, never the meeting itself. "
        "false: nothing is kept and plan_id is null.",
    )
    plan_retention_days: float = Field(
        default=90,
        gt=0,
        description="Plans older than this are deleted (checked on every new plan and at start).",
    )
    plan_max_records: int = Field(
        default=10_000,
        ge=1,
        description="Most plans kept; the oldest beyond it are deleted as new ones come.",
    )
    notion_token: SecretStr | None = Field(
        default=None,
        description="Notion internal integration token (POST /plans/{id}/notion). Unset: that "
        "call answers 409. Share the parent page or database with the integration.",
    )
    notion_base_url: str = Field(
        default="https://api.notion.com",
        description="Root of Notion's API (tests point it at a local fake).",
    )
    notion_max_retries: int = Field(
        default=4,
        ge=0,
        le=10,
        description="Retries of one Notion request answered 429 or 5xx (or not answered).",
    )
    notion_max_retry_after_s: float = Field(
        default=30,
        ge=0,
        le=600,
        description="Longest Retry-After of Notion's that a request waits out; a longer one is "
        "passed on to the caller as a 503 with Retry-After.",
    )
    notion_timeout_s: float = Field(
        default=30, gt=0, le=600, description="Timeout of one request to Notion (seconds)."
    )

    # --- webhooks -----------------------------------------------------------------------
    webhook_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated http(s) URLs told when any training job or evaluation "
        "succeeds, fails or is cancelled (besides its own webhook_url). Needs WEBHOOK_SECRET.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Key of the HMAC-SHA256 signature of every webhook (header "
        "Ttalkkac-Signature: t=<unix time>,v1=<hex of HMAC(secret, '<t>.<body>')>). Unset: "
        "no webhooks are sent, and POST /train or /evaluations with a webhook_url is refused "
        "(409).",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Let a job's or evaluation's own webhook_url reach loopback, private, "
        "link-local or reserved addresses. Off: only public addresses are posted to for a "
        "client's URL (WEBHOOK_URLS, set by the operator, may point anywhere).",
    )
    webhook_max_attempts: int = Field(
        default=5, ge=1, le=20, description="Deliveries tried per webhook before giving up."
    )
    webhook_backoff_s: float = Field(
        default=2.0,
        gt=0,
        le=600,
        description="Wait before the second attempt; doubled before each next one.",
    )
    webhook_timeout_s: float = Field(
        default=10, gt=0, le=120, description="Timeout of one webhook request (seconds)."
    )

    # --- experiment tracking and downloads ----------------------------------------------
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking server of jobs with hyperparameters.report_to='mlflow' "
        "(e.g. http://mlflow:5000); the worker hands it to transformers' MLflowCallback. Unset: "
        "such jobs are refused (422).",
    )
    mlflow_experiment: str = Field(
        default="ttalkkac",
        min_length=1,
        description="MLflow experiment of those runs (each run is named after its job).",
    )
    download_max_bytes: int = Field(
        default=64 * 1024**3,
        ge=1024,
        description="Largest zip the API streams (GET /adapters/{name}/download, "
        "/train/{id}/tensorboard.zip), counted before compression; larger is 413.",
    )

    # --- HTTP ----------------------------------------------------------------------------
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated bearer tokens. Empty: the API is open (logged at start; only "
        "on loopback unless ALLOW_UNAUTHENTICATED_NETWORK).",
    )
    allow_unauthenticated_network: bool = Field(
        default=False,
        description=(
            "Let the API answer the network with API_KEYS empty. Off: `ttalkkac api` / "
            "`ttalkkac up` refuse to listen on an address other than loopback (127.0.0.1, ::1, "
            "localhost), and a request from a non-loopback address is 403 however the server "
            "was started, since anyone who can reach the port could train, delete and read "
            "everything."
        ),
    )
    heavy_request_threads: int = Field(
        default=4,
        ge=1,
        le=64,
        description=(
            "Threads for heavy request work (dataset uploads, the dataset check of POST /train, "
            "loss and score plots, reports). More such requests wait for one, holding no thread: "
            "the rest of the API keeps its pool."
        ),
    )
    max_upload_bytes: int = Field(
        default=200 * 1024 * 1024, ge=1024, description="Largest dataset upload (bytes)."
    )
    max_request_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1024, description="Largest JSON request body (bytes)."
    )
    log_level: str = Field(default="INFO", description="Python logging level.")

    @field_validator("api_keys", "allowed_base_models", "webhook_urls", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        return [check_url(url) for url in urls]

    @model_validator(mode="after")
    def _webhooks_need_a_secret(self) -> Settings:
        if self.webhook_urls and self.webhook_secret is None:
            raise ValueError("WEBHOOK_URLS needs WEBHOOK_SECRET: every webhook is signed")
        return self

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        return self

    # --- derived locations (one place for every managed folder) ---------------------------
    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def adapters_dir(self) -> Path:
        """Adapters registered from a job's checkpoint (copies; the job folder may go)."""
        return self.data_dir / "adapters"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'ttalkkac.db'}"

    def ensure_dirs(self) -> None:
        for path in (self.data_dir, self.datasets_dir, self.jobs_dir, self.models_dir):
            path.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    """The process's settings, from the environment and ``.env``; built once."""
    return Settings(_env_file=".env")  # type: ignore[call-arg]
