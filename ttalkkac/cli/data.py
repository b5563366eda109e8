"""``ttalkkac data ...``: inspect and export gold-standard data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ttalkkac.data.examples import DEFAULT_MAX_SEQ_LEN
from ttalkkac.data.gold import (
    DEFAULT_MIN_QUALITY,
    DEFAULT_SEED,
    DEFAULT_VAL_FRACTION,
    GoldDataset,
    Unscored,
    load_gold,
)
from ttalkkac.errors import DataError

app = typer.Typer(no_args_is_help=True)

GoldDirArg = Annotated[
    Path, typer.Argument(help="Gold results folder (train_*/val_* sub-folders with result.json).")
]
MeetingsOpt = Annotated[
    Path, typer.Option("--meetings", help="Meetings folder (<meeting>/05_final_result.json).")
]
MinQualityOpt = Annotated[
    float, typer.Option("--min-quality", help="Keep records whose final_score is at least this.")
]
UnscoredOpt = Annotated[
    Unscored, typer.Option("--unscored", help="Records without a quality score: keep or not.")
]
ValFractionOpt = Annotated[
    float, typer.Option(help="Share of meetings held out when there are no val_ folders.")
]
SeedOpt = Annotated[int, typer.Option(help="Seed of the held-out meeting draw.")]
TokenizerOpt = Annotated[
    str | None,
    typer.Option(help="Tokenizer folder (a model folder) to measure tokens and build examples."),
]
MaxSeqLenOpt = Annotated[
    int, typer.Option(min=64, help="Longest training example in tokens (prompt + answer).")
]


def _load(
    gold_dir: Path,
    meetings: Path,
    min_quality: float,
    unscored: Unscored,
    val_fraction: float,
    seed: int,
    as_json: bool,
) -> GoldDataset:
    try:
        return load_gold(
            gold_dir,
            meetings,
            min_quality=min_quality,
            unscored=unscored,
            val_fraction=val_fraction,
            seed=seed,
        )
    except DataError as exc:
        if as_json:
            typer.echo(json.dumps({"error": exc.message, "stats": exc.detail}, ensure_ascii=False))
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc


def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: cannot load a tokenizer from {path}: {exc}", err=True)
        raise typer.Exit(1) from exc


def _summary(dataset: GoldDataset) -> dict[str, Any]:
    stats = dataset.stats.to_dict()
    keys = (
        "records",
        "usable",
        "train",
        "val",
        "train_meetings",
        "val_meetings",
        "split_method",
        "skipped",
        "shapes",
        "scored",
        "unscored",
        "scores",
        "min_quality",
        "unscored_policy",
        "chunk_records",
        "moved_to_val",
        "invalid_utterances",
        "ignored_entries",
        "plan_stats",
        "dropped_keys",
        "skip_samples",
    )
    return {key: stats[key] for key in keys}


def _print_human(summary: dict[str, Any], tokens: dict[str, Any] | None) -> None:
    console = Console()
    table = Table(title="Gold data", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("records", summary["records"]),
        ("usable", summary["usable"]),
        ("train records / meetings", f"{summary['train']} / {summary['train_meetings']}"),
        ("val records / meetings", f"{summary['val']} / {summary['val_meetings']}"),
        ("split", summary["split_method"]),
        ("shapes", ", ".join(f"{k} {v}" for k, v in summary["shapes"].items())),
        ("scores", ", ".join(f"{k} x{v}" for k, v in summary["scores"].items()) or "-"),
        ("unscored", f"{summary['unscored']} ({summary['unscored_policy']})"),
        ("min quality", summary["min_quality"]),
        ("chunk records", summary["chunk_records"]),
        ("extra plan keys dropped", sum(summary["dropped_keys"].values())),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)

    if summary["skipped"]:
        skipped = Table(title="Skipped records")
        skipped.add_column("reason")
        skipped.add_column("count", justify="right")
        skipped.add_column("e.g.")
        for reason, count in summary["skipped"].items():
            sample = summary["skip_samples"].get(reason, [""])[0]
            skipped.add_row(reason, str(count), sample if len(sample) < 60 else sample[:57] + "...")
        console.print(skipped)

    if tokens:
        tok = Table(title=f"Tokens (max_seq_len {tokens['max_seq_len']})")
        tok.add_column("")
        points = list(tokens["answer_tokens"]) or ["p50"]
        for point in points:
            tok.add_column(point, justify="right")
        for name in ("prompt_tokens", "answer_tokens", "example_tokens"):
            tok.add_row(name, *(str(tokens[name].get(p, "-")) for p in points))
        console.print(tok)
        console.print(
            f"examples {tokens['examples']} of {tokens['records']}: "
            f"{tokens['shortened']} shortened, {sum(tokens['dropped'].values())} dropped "
            "(answer too long)"
        )


@app.command("inspect")
def inspect(
    gold_dir: GoldDirArg,
    meetings: MeetingsOpt,
    min_quality: MinQualityOpt = DEFAULT_MIN_QUALITY,
    unscored: UnscoredOpt = Unscored.EXCLUDE,
    val_fraction: ValFractionOpt = DEFAULT_VAL_FRACTION,
    seed: SeedOpt = DEFAULT_SEED,
    tokenizer: TokenizerOpt = None,
    max_seq_len: MaxSeqLenOpt = DEFAULT_MAX_SEQ_LEN,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Count records, usable examples, the split by meeting and skips by reason."""
    dataset = _load(gold_dir, meetings, min_quality, unscored, val_fraction, seed, as_json)
    summary = _summary(dataset)
    tokens = None
    if tokenizer:
        from ttalkkac.data.examples import build_examples

        _examples, stats = build_examples(
            _tokenizer(tokenizer), dataset.records, max_seq_len=max_seq_len
        )
        tokens = stats.to_dict()
        summary["tokens"] = tokens
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False))
    else:
        _print_human(summary, tokens)


@app.command("export")
def export(
    gold_dir: GoldDirArg,
    meetings: MeetingsOpt,
    out: Annotated[Path, typer.Option("--out", help="The JSONL file to write.")],
    min_quality: MinQualityOpt = DEFAULT_MIN_QUALITY,
    unscored: UnscoredOpt = Unscored.EXCLUDE,
    val_fraction: ValFractionOpt = DEFAULT_VAL_FRACTION,
    seed: SeedOpt = DEFAULT_SEED,
    split: Annotated[str, typer.Option(help="Which records: all, train or val.")] = "all",
    tokenizer: Annotated[
        str | None,
        typer.Option(help="Shorten transcripts to fit --max-seq-len for this tokenizer."),
    ] = None,
    max_seq_len: MaxSeqLenOpt = DEFAULT_MAX_SEQ_LEN,
    with_metadata: Annotated[
        bool, typer.Option(help="Add record/meeting ids and the split to every line.")
    ] = False,
) -> None:
    """Write the usable examples as chat-message JSONL ({"messages": [...]} per line)."""
    from ttalkkac.data.jsonl import record_to_chat, write_chat_jsonl

    if split not in ("all", "train", "val"):
        raise typer.BadParameter("use all, train or val", param_hint="--split")
    dataset = _load(gold_dir, meetings, min_quality, unscored, val_fraction, seed, False)
    parts = [("train", dataset.train), ("val", dataset.val)]
    chosen = [(name, rec) for name, recs in parts if split in ("all", name) for rec in recs]
    meeting_texts: dict[str, str] = {}
    dropped = shortened = 0
    if tokenizer:
        from ttalkkac.data.examples import AnswerTooLong, ExampleBuilder, answer_text

        builder = ExampleBuilder(_tokenizer(tokenizer), max_seq_len=max_seq_len)
        for _name, record in chosen:
            try:
                example = builder.build(record.meeting_text, answer_text(record.plan))
            except AnswerTooLong:
                dropped += 1
                continue
            shortened += int(example.shortened)
            meeting_texts[record.record_id] = example.meeting_text
        chosen = [(name, rec) for name, rec in chosen if rec.record_id in meeting_texts]
    lines = (
        record_to_chat(
            record,
            meeting_text=meeting_texts.get(record.record_id),
            metadata=with_metadata,
            split=name,
        )
        for name, record in chosen
    )
    count = write_chat_jsonl(lines, out)
    extra = f" ({shortened} shortened, {dropped} dropped: answer too long)" if tokenizer else ""
    typer.echo(f"wrote {count} examples to {out}{extra}")
