"""How the benchmark pairs greedy answers of two engines, meeting by meeting, to compare latency."""

from __future__ import annotations

from bench.generation import greedy_pairs, invalid_sample, summarize
from ttalkkac.errors import GenerationInvalid


def _row(meeting: str, latency: float, tokens: int, answer: str | None) -> dict:
    return {
        "meeting_id": meeting,
        "latency_s": latency,
        "completion_tokens": tokens,
        "valid": answer is not None,
        "first_try": True,
        "error": None if answer else "invalid",
        "answer": answer,
    }


def test_pairs_meetings_and_tells_identical_plans_apart() -> None:
    results = {
        "transformers": {
            "greedy": [
                _row("m1", 10.0, 400, "aaa"),
                _row("m2", 20.0, 800, "bbb"),
                _row("m3", 30.0, 900, None),
            ]
        },
        "vllm_merged": {
            "greedy": [
                _row("m1", 4.0, 400, "aaa"),
                _row("m2", 12.0, 700, "ccc"),
                _row("m3", 6.0, 900, None),
            ]
        },
        "guide": {"levels": []},
    }
    pairs = greedy_pairs(results)
    assert set(pairs) == {"vllm_merged/transformers"}
    r = pairs["vllm_merged/transformers"]
    assert [p["meeting_id"] for p in r["pairs"]] == ["m1", "m2", "m3"]
    assert [p["identical_plan"] for p in r["pairs"]] == [
        True,
        False,
        False,
    ]  # two invalid: not identical
    assert [p["latency_ratio"] for p in r["pairs"]] == [0.4, 0.6, 0.2]
    assert r["identical_plans"] == 1
    assert r["latency_ratio_p50"] == 0.4
    assert r["latency_ratio_p50_identical"] == 0.4
    assert (r["latency_p50_s"], r["base_latency_p50_s"]) == (6.0, 20.0)


def test_nothing_to_pair_without_the_transformers_engine() -> None:
    assert greedy_pairs({"vllm_merged": {"greedy": [_row("m1", 1.0, 10, "a")]}}) == {}


def test_an_invalid_plan_counts_the_tokens_its_attempts_generated() -> None:
    """Throughput counts work done: a plan that failed twice still generated both answers."""
    exc = GenerationInvalid(
        "did not validate, twice",
        detail={"attempts": [{"completion_tokens": 512}, {"completion_tokens": 300}]},
    )
    sample = invalid_sample(exc, latency_s=4.0)
    assert sample.completion_tokens == 812 and not sample.valid
    assert summarize([sample], wall_s=2.0, concurrency=1)["generated_tokens_per_s"] == 406.0
