"""TtalkkacInference: the Python API, without the service (transformers engine, tiny model)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ttalkkac.errors import InvalidInput
from ttalkkac.inference import TtalkkacInference
from ttalkkac.plan import ProjectPlan

MEETING = [
    {"timestamp": "00:01", "speaker": "Speaker_A", "text": "리모컨 디자인을 논의하겠습니다."},
    {"timestamp": "00:02", "speaker": "Speaker_B", "text": "시장 조사를 하겠습니다."},
]


@pytest.fixture(scope="module")
def inference(terse_model_dir: Path, tiny_adapters, tmp_path_factory):
    from ttalkkac.settings import Settings

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("client-data"),
        default_max_tokens=256,
        max_model_len=2048,
        serving_enabled=False,
    )
    with TtalkkacInference(
        base_model=str(terse_model_dir),
        adapter=str(tiny_adapters[0]),
        engine="transformers",
        settings=settings,
    ) as inference:
        yield inference


def test_generate_project_plan(inference) -> None:
    plan = inference.generate_project_plan(MEETING)
    assert isinstance(plan, ProjectPlan)
    result = inference.generate("Alice writes the API spec by Friday.")
    assert result.adapter == inference.adapter.name and result.engine == "transformers"


def test_many_meetings_at_once(inference) -> None:
    results = inference.generate_many([MEETING, "Bob owns the migration.", MEETING])
    assert len(results) == 3 and all(isinstance(r.plan, ProjectPlan) for r in results)


def test_works_inside_a_running_event_loop(inference) -> None:
    # A notebook already runs a loop; the API runs its own on a thread, so this must not fail.
    async def notebook_cell() -> ProjectPlan:
        return inference.generate_project_plan(MEETING)

    assert isinstance(asyncio.run(notebook_cell()), ProjectPlan)


def test_errors_are_the_domain_errors(inference) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        inference.generate_project_plan("   ")
