"""The SmolLM2-135M demo model through the Python API on vLLM: a valid plan about the meeting.

The demo model is untrained for this task (and reads the guide's Korean prompt), so the check is
about what any plan must get right at the least: what the meeting is about. Who it names is not
checked here: greedy answers of the untrained model change with the CPU's kernels (one machine
named "charlie" as manager), and how well a model names the meeting's people is what the
evaluation's grounding score measures (tests/ttalkkac/evaluation), not a pass/fail property.
"""

from __future__ import annotations

import pytest

from ttalkkac.plan import ProjectPlan

MEETING = (
    "[00:00] Alice: Thanks for joining. We need to launch the new mobile app by the end of March.\n"
    "[00:20] Bob: I will build the login screen and the payment page by March 10.\n"
    "[00:45] Carol: I will write the test plan and run the user tests in the third week of March.\n"
    "[01:05] Alice: Great. I will manage the project and send the weekly status report every "
    "Friday."
)
TASKS = ("mobile app", "login", "payment", "test plan", "user test", "status report")


@pytest.mark.slow
def test_demo_model_plan_is_about_the_meeting(demo_model_dir, tmp_path) -> None:
    from ttalkkac.inference import TtalkkacInference
    from ttalkkac.settings import Settings

    # Compiled, as shipped: this model's answers run long, and eager decoding is 3x slower here.
    settings = Settings(
        data_dir=tmp_path / "data", max_model_len=4096, serving_enabled=False, enforce_eager=False
    )
    with TtalkkacInference(
        base_model=str(demo_model_dir), adapter="base", engine="vllm", settings=settings
    ) as inference:
        result = inference.generate(MEETING, temperature=0.0)
    assert isinstance(result.plan, ProjectPlan)
    text = result.plan.model_dump_json().lower()
    tasks = [task for task in TASKS if task in text]
    assert tasks, f"no task of the meeting in the plan: {text}"
