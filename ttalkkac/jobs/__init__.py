"""Training jobs: submit, cancel, run (idempotently) and recover after a worker dies.

States: ``queued -> running -> succeeded | failed | cancelled``, plus ``cancelling`` while a
cancel of a running job is in flight. Every status change is a compare-and-set UPDATE
(``crud.transition_job``), so the API and a worker racing on one job cannot both win.

Delivery is at least once (Celery ``acks_late``), so ``run_job`` is idempotent: a terminal job is
left alone, a job running under a live process is a duplicate delivery and is skipped, and a
job whose process is gone (killed, OOM, machine lost) is taken over with ``attempts`` counted
and resumed from its last checkpoint in ``JOBS_DIR/<job id>/``; past ``MAX_JOB_ATTEMPTS`` it
ends ``failed`` with the reason. Liveness is the ``worker`` column (``host:pid``, checked
directly on the same host) and a heartbeat every ``JOB_HEARTBEAT_S`` (for other hosts).
``recover_orphaned_jobs`` (each worker at start-up and every ``JOB_SWEEP_INTERVAL_S``) re-enqueues
jobs whose process is gone, since a broker only redelivers an unacknowledged message after its
visibility timeout, which must exceed the longest job.

Where things live (each module imports only the ones above it):

- ``liveness``: ``process_id``, ``owner_alive``, the ``Heartbeat`` thread, the re-enqueue marker.
- ``retry``: the retry policy, ``give_up_reason`` (attempts used up, time limit passed).
- ``claim``: ``claim_job`` (take a delivery, or say why not: a ``RunOutcome``), ``fail``,
  ``finish_cancelled``, ``ACTIVE``, ``job_dir``.
- ``reporting``: ``JobReporter``, a run's events, progress and metrics; cancel requests.
- ``execution``: ``run_job`` (claim, train, register the adapter, finish), ``adapter_name_for``.
- ``recovery``: ``recover_orphaned_jobs``, the sweep.
- ``commands``: the API side, ``create_job``, ``cancel_job``, ``mark_enqueue_failed``.
"""

from ttalkkac.jobs.claim import ACTIVE, RunOutcome, job_dir
from ttalkkac.jobs.commands import cancel_job, create_job, mark_enqueue_failed
from ttalkkac.jobs.execution import adapter_name_for, run_job
from ttalkkac.jobs.liveness import owner_alive, process_id
from ttalkkac.jobs.recovery import recover_orphaned_jobs
from ttalkkac.jobs.reporting import JobReporter

__all__ = [
    "ACTIVE",
    "JobReporter",
    "RunOutcome",
    "adapter_name_for",
    "cancel_job",
    "create_job",
    "job_dir",
    "mark_enqueue_failed",
    "owner_alive",
    "process_id",
    "recover_orphaned_jobs",
    "run_job",
]
