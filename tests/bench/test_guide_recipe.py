"""The guide's inference as the benchmark judges it: its unconstrained answer parsed afterwards."""

from __future__ import annotations

from bench.guide_recipe import judge
from tests.utils.gold_factory import plan_dict
from ttalkkac.plan import normalize_plan


def test_judge_tells_valid_plans_from_invalid_and_unparseable_text() -> None:
    plan = normalize_plan(plan_dict()).plan
    assert judge(plan.to_json()) == {"parseable": True, "schema_valid": True, "error": None}
    assert judge(f"  {plan.to_json()}\n")["schema_valid"]  # surrounding whitespace is fine
    invalid = judge('{"project_name": "x"}')
    assert (invalid["parseable"], invalid["schema_valid"]) == (True, False)
    assert invalid["error"].startswith("schema: ")
    unparseable = judge('{"project_name": ')
    assert (unparseable["parseable"], unparseable["schema_valid"]) == (False, False)
    assert unparseable["error"].startswith("json: ")
