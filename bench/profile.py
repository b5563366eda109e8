"""Where the time goes: summarize a py-spy profile into the top costs.

py-spy is not a dependency; install it where you profile (``.venv/bin/pip install py-spy``)
and record the process of interest, for example a training variant or vLLM's engine process::

    py-spy record --native --format raw -d 60 -o train.txt --pid <pid>
    python -m bench profile-summary train.txt --out bench/results/profile-train.md

The summary lists frames by inclusive share (time spent in the frame and below it) and by self
share (time in the frame itself), with the interpreter's plumbing (``Module._call_impl`` and
friends) left out so the model's own layers and kernels stand out.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

_PLUMBING = (
    "Module._call_impl",
    "Module._wrapped_call_impl",
    "_wrapped_call_impl",
    "decorate_context",
    "wrapper (",
    "Thread.run",
    "Thread._bootstrap",
    "_run_module_as_main",
    "_run_code",
    "<module>",
    "clone (",
    "start_thread (",
    "__libc_start",
    "_start (",
)


# Threads parked in these frames are waiting, not working: their samples are left out.
_IDLE = (
    "Condition.wait",
    "Event.wait",
    "EpollSelector.select",
    "_worker (concurrent/futures/thread.py",
    "Queue.get",
    "TMonitor.run",
)


def _plumbing(frame: str) -> bool:
    return any(p in frame for p in _PLUMBING)


def parse(path: Path) -> tuple[Counter[str], Counter[str], int]:
    """Inclusive and self sample counts per frame from a py-spy ``--format raw`` file."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        # With --native the leaf is a C frame (a futex in libc): judge by the innermost
        # Python frame too.
        python = next((f for f in reversed(frames) if ".py:" in f), "")
        if any(marker in frames[-1] or marker in python for marker in _IDLE):
            continue
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    return inclusive, own, total


def summarize(path: Path, *, title: str = "", top: int = 25) -> str:
    inclusive, own, total = parse(path)
    if not total:
        return f"## {title or path.name}\n\nNo samples in {path}."
    lines = [
        f"## {title or path.name}",
        "",
        f"{total:,} samples from `{path.name}`.",
        "",
        "| inclusive | frame |",
        "|---|---|",
    ]
    shown = 0
    for frame, n in inclusive.most_common():
        if _plumbing(frame) or n == total:
            continue
        lines.append(f"| {100 * n / total:.1f}% | `{frame[:140]}` |")
        shown += 1
        if shown == top:
            break
    lines += ["", "| self | frame |", "|---|---|"]
    for frame, n in own.most_common(top):
        lines.append(f"| {100 * n / total:.1f}% | `{frame[:140]}` |")
    return "\n".join(lines)
