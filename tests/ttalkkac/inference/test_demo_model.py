"""The SmolLM2-135M demo model through the Python API on vLLM: a plan that names the meeting's
people and tasks.

The demo model is untrained for this task (and reads the guide's Korean prompt), so the check is
deliberately about what a plan must get right at the least: who and what. Greedy decoding with
the default repetition penalty makes the answer reproducible.
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
PEOPLE = ("alice", "bob", "carol")
TASKS = ("mobile app", "login", "payment", "test plan", "user test", "status report")


@pytest.mark.slow
def test_demo_model_plan_names_people_and_tasks(demo_model_dir, tmp_path) -> None:
    from ttalkkac.inference import TtalkkacInference
    from ttalkkac.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", max_model_len=4096, serving_enabled=False)
    with TtalkkacInference(
        base_model=str(demo_model_dir), adapter="base", engine="vllm", settings=settings
    ) as inference:
        result = inference.generate(MEETING, temperature=0.0)
    assert isinstance(result.plan, ProjectPlan)
    text = result.plan.model_dump_json().lower()
    people = [name for name in PEOPLE if name in text]
    tasks = [task for task in TASKS if task in text]
    assert len(people) >= 2, f"people named: {people}; plan: {text}"
    assert tasks, f"no task of the meeting in the plan: {text}"
