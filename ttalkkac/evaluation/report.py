"""Evaluation reports: Markdown, and a bar chart of per-field scores (matplotlib).

Both take evaluations as plain dicts (``EvaluationPublic`` dumped, or the API's JSON), so the
API, the CLI and the bench render the same report. The chart uses matplotlib's object API on
the Agg canvas, never pyplot's global state, so it is safe from any thread.
"""

from __future__ import annotations

import io
from typing import Any

from ttalkkac.plan import PLAN_FIELDS

FIELD_LABELS = {
    "project_name": "프로젝트명",
    "project_purpose": "목적",
    "project_period": "기간",
    "project_manager": "담당자",
    "core_objectives": "핵심 목표",
    "core_idea": "핵심 아이디어",
    "idea_description": "아이디어 설명",
    "execution_plan": "실행 계획",
    "expected_effects": "기대 효과",
}


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def headline_rows(label: str, summary: dict[str, Any] | None) -> list[str]:
    s = summary or {}
    return [
        f"| {label} | {_f(s.get('field_chrf'))} | {_f(s.get('valid_rate'), 2)} | "
        f"{_f(s.get('grounding'), 3)} | {_f(s.get('manager_grounded_rate'), 2)} | "
        f"{_f(s.get('names_grounded'), 2)} | {_f(s.get('period_is_range_rate'), 2)} |"
    ]


HEADLINE_HEADER = [
    "| | field chrF (0-100) | valid rate | grounding | manager in meeting | names in meeting "
    "| period is a range |",
    "|---|---|---|---|---|---|---|",
]


def report_markdown(evaluation: dict[str, Any], *, plot_name: str | None = None) -> str:
    summary = evaluation.get("summary") or {}
    floor = summary.get("generic_floor")
    progress = evaluation.get("progress") or {}
    lines = [
        f"# Evaluation {evaluation['id']}: {evaluation['adapter']}",
        "",
        f"- Status: {evaluation['status']} ({progress.get('step', 0)} of "
        f"{progress.get('total_steps') or '?'} examples)",
        f"- Dataset {evaluation['dataset_id']}, split {evaluation['split']}, "
        f"{evaluation['max_samples']} samples at most, meetings cut to "
        f"{evaluation['max_meeting_chars']:,} characters, seed {evaluation['seed']}",
        f"- Base model: {evaluation.get('base_model') or '-'}",
    ]
    if evaluation.get("error"):
        lines.append(
            f"- Error: {evaluation['error'].get('type')}: {evaluation['error'].get('message')}"
        )
    lines += [
        "",
        "## Scores",
        "",
        *HEADLINE_HEADER,
        *headline_rows(evaluation["adapter"], summary),
        *headline_rows("generic floor (another meeting's gold plan)", floor),
        "",
        "The generic floor scores a well-formed gold plan of a *different* meeting against each "
        "gold plan: what the template alone earns. A model at or below it learned nothing about "
        "the meeting.",
        "",
        "## Per field (chrF; list fields: item-aligned F1)",
        "",
        f"| field | {evaluation['adapter']} | generic floor |",
        "|---|---|---|",
    ]
    fields = summary.get("fields") or {}
    floor_fields = (floor or {}).get("fields") or {}
    for name in PLAN_FIELDS:
        lines.append(
            f"| {name} ({FIELD_LABELS[name]}) | {_f(fields.get(name))} | "
            f"{_f(floor_fields.get(name))} |"
        )
    validity = summary.get("validity") or {}
    if validity:
        lines += [
            "",
            "Validity: " + ", ".join(f"{k} {v}" for k, v in validity.items()),
            f"; latency p50 {_f(summary.get('latency_ms_p50'), 0)} ms, "
            f"{_f(summary.get('completion_tokens_mean'), 0)} answer tokens on average.",
        ]
    if plot_name:
        lines += ["", f"![per-field scores]({plot_name})"]
    rows = evaluation.get("rows") or []
    if rows:
        lines += [
            "",
            "## Examples",
            "",
            "| # | record | validity | field chrF | grounding | floor chrF | latency s | "
            "project name |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            plan = row.get("plan") or {}
            name = str(plan.get("project_name", row.get("error") or "-")).replace("|", "/")[:60]
            lines.append(
                f"| {row['index']} | {row['record_id'][:40]} | {row['validity']} | "
                f"{_f(row['score'].get('field_chrf'))} | {_f(row['score'].get('grounding'), 2)} "
                f"| {_f((row.get('floor') or {}).get('field_chrf'))} | "
                f"{_f(row['latency_ms'] / 1000)} | {name} |"
            )
    return "\n".join(lines) + "\n"


def compare_markdown(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Two evaluations side by side with per-field deltas (b minus a)."""
    sa, sb = a.get("summary") or {}, b.get("summary") or {}
    lines = [
        f"| | {a['adapter']} ({a['id']}) | {b['adapter']} ({b['id']}) | delta |",
        "|---|---|---|---|",
    ]
    keys = [("field_chrf", 1), ("valid_rate", 2), ("grounding", 3)]
    for key, digits in keys:
        lines.append(_delta_row(key, sa.get(key), sb.get(key), digits))
    for name in PLAN_FIELDS:
        lines.append(
            _delta_row(
                name, (sa.get("fields") or {}).get(name), (sb.get("fields") or {}).get(name), 1
            )
        )
    return "\n".join(lines) + "\n"


def _delta_row(label: str, x: Any, y: Any, digits: int) -> str:
    delta = "-" if x is None or y is None else f"{y - x:+.{digits}f}"
    return f"| {label} | {_f(x, digits)} | {_f(y, digits)} | {delta} |"


def scores_plot_png(evaluations: list[dict[str, Any]]) -> bytes:
    """Grouped bars: per-field scores of each evaluation, and the first one's generic floor."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series: list[tuple[str, dict[str, float]]] = []
    for evaluation in evaluations:
        summary = evaluation.get("summary") or {}
        series.append(
            (f"{evaluation['adapter']} ({evaluation['id']})", summary.get("fields") or {})
        )
    floor = (
        ((evaluations[0].get("summary") or {}).get("generic_floor") or {}) if evaluations else {}
    )
    if floor.get("fields"):
        series.append(("generic floor", floor["fields"]))
    figure = Figure(figsize=(10, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    width = 0.8 / max(len(series), 1)
    positions = range(len(PLAN_FIELDS))
    for i, (label, fields) in enumerate(series):
        axes.bar(
            [p + i * width for p in positions],
            [fields.get(name, 0.0) for name in PLAN_FIELDS],
            width,
            label=label,
        )
    axes.set_xticks([p + width * (len(series) - 1) / 2 for p in positions])
    axes.set_xticklabels(list(PLAN_FIELDS), rotation=30, ha="right", fontsize=8)
    axes.set_ylabel("chrF / item F1 (0-100)")
    axes.set_ylim(0, 100)
    axes.legend(fontsize=8)
    axes.set_title("Per-field scores against the gold plans")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
