"""``EvaluationRunner``: runs queued evaluations inside an API process that serves plans.

Why in the API process: an evaluation must generate through the serving engine (the same path
as ``/generate``), and the engine lives here. A Celery task calling the API over HTTP would add
a hop and a second copy of the client logic without gaining durability, since the store already
is the queue. Durability comes from the store:

- An evaluation is claimed with a compare-and-set (``queued -> running``, ``owner`` = this
  process), so two API processes never run one evaluation; the claim also takes over a
  ``running`` evaluation whose owner is gone (its pid is dead on this host, or its heartbeat is
  older than ``JOB_STALE_AFTER_S``), which is how a restarted API resumes.
- Every finished example is one row, committed as it finishes and unique per index: a resumed
  run skips the indices it has, so no finished row is ever lost or doubled.
- Writes are fenced by owner: a process that lost its evaluation (taken over while paused)
  writes nothing more and stops.
- Cancel: ``cancelling`` is seen at the next heartbeat or row; examples in flight are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from ttalkkac.adapters import BASE
from ttalkkac.errors import TtalkkacError
from ttalkkac.evaluation.commands import scores_of
from ttalkkac.evaluation.examples import EvalExample, EvalSplit, Selection, select_examples
from ttalkkac.evaluation.run import RowResult, evaluate_examples, summarize
from ttalkkac.jobs.liveness import process_id, recorded_process_alive
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store import evaluations as store
from ttalkkac.store.db import Database
from ttalkkac.store.models import Evaluation, JobStatus, utcnow

logger = logging.getLogger(__name__)

ACTIVE = (JobStatus.running, JobStatus.cancelling)


class EvalOutcome(StrEnum):
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    lost = "lost"  # another process took it over: this one stopped without writing


class _LostOwnership(Exception):
    pass


class _CancelRequested(Exception):
    pass


@dataclass(frozen=True)
class _Claimed:
    id: str
    adapter: str
    dataset_id: str
    split: EvalSplit
    max_samples: int
    max_meeting_chars: int
    seed: int
    selection: Selection
    attempts: int


class EvaluationRunner:
    """One evaluation at a time per process; its examples run concurrently on the engine."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        generator: Any,
        *,
        resolve_adapter: Callable[[str], Any] | None = None,
        owner: str | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.generator = generator
        self.owner = owner or process_id()
        self._resolve = resolve_adapter or self._resolve_from_registry
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.current: str | None = None  # the evaluation being run, for /ready

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="evaluation-runner")

    def wake(self) -> None:
        """Look for work now (a new evaluation was queued)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop; an evaluation in progress stays ``running`` and is resumed by the next start."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                if self.generator.ready:
                    claimed = await asyncio.to_thread(self.claim_next)
                    if claimed is not None:
                        await self.run(claimed)
                        continue
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must survive a store blip; the claim is retried
                logger.exception("evaluation runner: unexpected error; retrying")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.eval_poll_s)

    # --- claim -----------------------------------------------------------------------------

    def _alive(self, evaluation: Evaluation, now: datetime) -> bool:
        return recorded_process_alive(
            evaluation.owner,
            evaluation.heartbeat_at,
            stale_after_s=self.settings.job_stale_after_s,
            now=now,
        )

    def claim_next(self) -> _Claimed | None:
        """Take the oldest queued evaluation, or one whose owner is gone; None: nothing to do."""
        with self.db.session() as session:
            orphans, _ = store.list_evaluations(session, statuses=ACTIVE, limit=100)
            queued, _ = store.list_evaluations(session, statuses=[JobStatus.queued], limit=100)
            now = crud.store_now(session)
            candidates = [e for e in reversed(orphans) if not self._alive(e, now)]
            candidates += list(reversed(queued))  # oldest first
            for evaluation in candidates:
                claimed = self._claim(session, evaluation)
                if claimed is not None:
                    return claimed
        return None

    def _claim(self, session: Any, evaluation: Evaluation) -> _Claimed | None:
        now = crud.store_now(session)
        status = JobStatus(evaluation.status)
        # Read now: the compare-and-set below updates ``evaluation`` in the session too.
        previous, attempts = evaluation.owner, evaluation.attempts
        if status is JobStatus.cancelling:
            if store.transition_evaluation(
                session,
                id=evaluation.id,
                from_statuses=[JobStatus.cancelling],
                to_status=JobStatus.cancelled,
                where=[Evaluation.owner == previous],
                finished_at=now,
            ):
                logger.info("[eval %s] cancelled (its runner was gone)", evaluation.id)
            return None
        where = [] if status is JobStatus.queued else [Evaluation.owner == previous]
        if not store.transition_evaluation(
            session,
            id=evaluation.id,
            from_statuses=[status],
            to_status=JobStatus.running,
            where=where,
            owner=self.owner,
            heartbeat_at=now,
            attempts=attempts + 1,
            started_at=evaluation.started_at or now,
        ):
            return None  # another process was faster
        session.commit()
        if status is not JobStatus.queued:
            logger.warning(
                "[eval %s] runner %s is gone; resuming (%d rows kept)",
                evaluation.id,
                previous,
                store.count_rows(session, evaluation_id=evaluation.id),
            )
        return _Claimed(
            id=evaluation.id,
            adapter=evaluation.adapter,
            dataset_id=evaluation.dataset_id,
            split=EvalSplit(evaluation.split),
            max_samples=evaluation.max_samples,
            max_meeting_chars=evaluation.max_meeting_chars,
            seed=evaluation.seed,
            selection=Selection.model_validate(evaluation.selection or {}),
            attempts=attempts + 1,
        )

    # --- run -------------------------------------------------------------------------------

    def _resolve_from_registry(self, name: str) -> Any:
        from ttalkkac.adapters import resolve_adapter

        if name == BASE:
            return None
        with self.db.session() as session:
            return resolve_adapter(
                session,
                self.settings,
                name=name,
                served_base_model=self.generator.engine.base_model,
            )

    def _prepare(self, claimed: _Claimed) -> tuple[list[EvalExample], set[int], Any]:
        from ttalkkac.datasets import layout_of
        from ttalkkac.evaluation.examples import load_split

        with self.db.session() as session:
            dataset = crud.get_dataset(session, id=claimed.dataset_id)
            if dataset is None:
                raise TtalkkacError(f"dataset {claimed.dataset_id} no longer exists")
            folder, layout = Path(dataset.path), layout_of(dataset)
        records = load_split(folder, layout, claimed.split, claimed.selection)
        examples = select_examples(
            records,
            max_samples=claimed.max_samples,
            max_meeting_chars=claimed.max_meeting_chars,
            seed=claimed.seed,
        )
        adapter = self._resolve(claimed.adapter)
        with self.db.session() as session:
            done = {row.index for row in store.list_rows(session, evaluation_id=claimed.id)}
            self._fenced(
                session,
                claimed.id,
                total=len(examples),
                done=len(done),
                base_model=self.generator.engine.base_model,
            )
        return examples, done, adapter

    def _fenced(self, session: Any, evaluation_id: str, **fields: Any) -> None:
        """An owner-conditional update; ``_CancelRequested``/``_LostOwnership`` stop the run."""
        if not store.update_owned(
            session,
            id=evaluation_id,
            owner=self.owner,
            heartbeat_at=crud.store_now(session),
            **fields,
        ):
            raise _LostOwnership(evaluation_id)
        status = store.get_evaluation(session, id=evaluation_id)
        if status is not None and status.status == JobStatus.cancelling:
            raise _CancelRequested(evaluation_id)

    def _store_row(self, evaluation_id: str, row: RowResult) -> None:
        with self.db.session() as session:
            self._fenced(session, evaluation_id)
            store.add_row(
                session,
                evaluation_id=evaluation_id,
                index=row.index,
                record_id=row.record_id,
                result=row.to_dict(),
            )
            session.flush()
            store.update_owned(
                session,
                id=evaluation_id,
                owner=self.owner,
                done=store.count_rows(session, evaluation_id=evaluation_id),
            )

    async def _heartbeat(self, evaluation_id: str) -> None:
        every = max(1.0, min(self.settings.job_heartbeat_s, self.settings.job_stale_after_s / 3))
        while True:
            await asyncio.sleep(every)
            await asyncio.to_thread(self._beat, evaluation_id)

    def _beat(self, evaluation_id: str) -> None:
        with self.db.session() as session:
            self._fenced(session, evaluation_id)

    async def run(self, claimed: _Claimed) -> EvalOutcome:
        """Run (or resume) one claimed evaluation to its end."""
        self.current = claimed.id
        try:
            return await self._run(claimed)
        finally:
            self.current = None

    async def _run(self, claimed: _Claimed) -> EvalOutcome:
        evaluation_id = claimed.id
        try:
            examples, done, adapter = await asyncio.to_thread(self._prepare, claimed)
            todo = [e for e in examples if e.index not in done]
            logger.info(
                "[eval %s] %s on %s/%s: %d examples, %d to run (attempt %d)",
                evaluation_id,
                claimed.adapter,
                claimed.dataset_id,
                claimed.split.value,
                len(examples),
                len(todo),
                claimed.attempts,
            )

            async def on_row(row: RowResult) -> None:
                await asyncio.to_thread(self._store_row, evaluation_id, row)

            work = asyncio.create_task(
                evaluate_examples(
                    self.generator,
                    todo,
                    adapter=adapter,
                    seed=claimed.seed,
                    concurrency=self.settings.eval_concurrency,
                    request_id=evaluation_id,
                    on_row=on_row,
                )
            )
            beat = asyncio.create_task(self._heartbeat(evaluation_id))
            try:
                finished, _ = await asyncio.wait({work, beat}, return_when=asyncio.FIRST_COMPLETED)
                if beat in finished:
                    beat.result()  # raises why the heartbeat stopped
                work.result()
            finally:
                for task in (work, beat):
                    task.cancel()
                await asyncio.gather(work, beat, return_exceptions=True)
            return await asyncio.to_thread(self._finish, evaluation_id, claimed.adapter)
        except _LostOwnership:
            logger.warning("[eval %s] taken over by another process; stopping", evaluation_id)
            return EvalOutcome.lost
        except _CancelRequested:
            await asyncio.to_thread(self._end, evaluation_id, JobStatus.cancelled, None)
            return EvalOutcome.cancelled
        except asyncio.CancelledError:
            raise  # the API is stopping: the evaluation stays running and is resumed later
        except Exception as exc:
            logger.exception("[eval %s] failed", evaluation_id)
            message = getattr(exc, "message", None) or str(exc)
            await asyncio.to_thread(
                self._end, evaluation_id, JobStatus.failed, (type(exc).__name__, str(message))
            )
            return EvalOutcome.failed

    def _finish(self, evaluation_id: str, adapter: str) -> EvalOutcome:
        with self.db.session() as session:
            rows = [row.result for row in store.list_rows(session, evaluation_id=evaluation_id)]
            moved = store.transition_evaluation(
                session,
                id=evaluation_id,
                from_statuses=[JobStatus.running],
                to_status=JobStatus.succeeded,
                where=[Evaluation.owner == self.owner],
                summary=summarize(rows),
                done=len(rows),
                finished_at=utcnow(),
            )
            if not moved:
                current = store.get_evaluation(session, id=evaluation_id)
                if current is not None and current.status == JobStatus.cancelling:
                    raise _CancelRequested(evaluation_id)
                raise _LostOwnership(evaluation_id)
            evaluation = store.get_evaluation(session, id=evaluation_id)
            if adapter != BASE and evaluation is not None:
                row = crud.get_adapter(session, name=adapter)
                if row is not None:
                    row.metrics = {**(row.metrics or {}), "evaluation": scores_of(evaluation)}
            summary = evaluation.summary if evaluation is not None else {}
        logger.info(
            "[eval %s] succeeded: field chrF %.2f, valid %.2f, grounding %.2f (floor %s)",
            evaluation_id,
            summary.get("field_chrf", 0.0),
            summary.get("valid_rate", 0.0),
            summary.get("grounding", 0.0),
            (summary.get("generic_floor") or {}).get("field_chrf"),
        )
        return EvalOutcome.succeeded

    def _end(self, evaluation_id: str, status: JobStatus, error: tuple[str, str] | None) -> None:
        with self.db.session() as session:
            fields: dict[str, Any] = {"finished_at": utcnow()}
            if error is not None:
                fields.update(error_type=error[0][:100], error_message=error[1][:4000])
            rows = [row.result for row in store.list_rows(session, evaluation_id=evaluation_id)]
            if rows:
                fields["summary"] = summarize(rows)  # what was finished stays readable
            store.transition_evaluation(
                session,
                id=evaluation_id,
                from_statuses=list(ACTIVE),
                to_status=status,
                where=[Evaluation.owner == self.owner],
                **fields,
            )
