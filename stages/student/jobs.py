"""Many student runs at once: the scheduler of their units, every (run, seed) in a process pool (or on a Dask
cluster), each worker single-threaded. What a run is, trains and publishes is ``StudentRun``'s; this module only decides where and when.

A run is published as soon as all of its seeds are back, from the same ``SeedResult`` s in
the same order as ``--jobs 1`` would produce, so results are identical bit for bit (each
unit draws only from its own seed; BLAS runs one thread in both paths). The parent claims
each pending run (its key lock) from before its first unit starts until it is published, so
concurrent invocations never train the same run twice; a run another process finished
meanwhile is skipped. Workers are spawned (no fork after MindSpore has started threads) and
report every epoch to the parent, which draws one progress line per running unit. Workers and
the queue's manager process die with the parent, even when it is killed (``die_with_parent``).

Where the units run is the one thing that varies: a ``Units`` (submit one unit, count the workers, relay their
progress messages) over this machine's process pool (``ProcessPool``, the default) or a Dask cluster
(``stages.student.cluster``, ``--cluster``). Claiming, collecting, publishing and the progress bar are the same.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack, contextmanager
from multiprocessing import get_context
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Protocol

from pipeline.interrupt import ignore_in_worker
from pipeline.config import StudentConfig
from pipeline.console import progress
from pipeline.errors import QdllmError
from stages.student.run import StudentRun

log = logging.getLogger(__name__)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "QDLLM_INFER_THREADS": "1"}


def usable_cpus() -> list[int]:
    """The cores this process may use, or [] where the OS does not say (not Linux)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def default_jobs() -> int:
    """The cores this process may use."""
    return len(usable_cpus()) or os.cpu_count() or 1


def check_jobs(jobs: int | None) -> int:
    """``--jobs``, or the usable cores when not given; more workers than cores only slow every unit down
    (each worker holds a MindSpore runtime of about 650 MB), so that is refused in one sentence."""
    cores = default_jobs()
    if jobs is None:
        return cores
    if jobs > cores:
        raise QdllmError(f"--jobs {jobs} is more than the {cores} core(s) this process may use; give --jobs {cores} "
                         "or fewer (or leave it out to use them all).")
    return jobs


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """In a child process: be killed when the parent ``parent`` dies, even by SIGKILL (Linux: the kernel sends
    SIGKILL on the parent's death), and exit at once when it is already gone; no worker lives on adopted by init."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


class _QueueBar:
    """The two calls ``train_seed`` makes on a rich Progress, forwarded to the parent through a queue."""

    def __init__(self, q, unit: int) -> None:
        self.q, self.unit = q, unit

    def add_task(self, description: str, total: float | None = None) -> int:
        self.q.put(("add", self.unit, description, total))
        return self.unit

    def update(self, task: int, advance: float = 0, description: str | None = None) -> None:
        self.q.put(("update", self.unit, advance, description))


def _init_worker(parent: int, counter, cpus: list[int]) -> None:
    """Pool initializer: the worker dies with its parent, and with ``cpus`` the k-th worker (and every thread it
    starts) runs on the k-th usable core only. Unpinned, a worker's threads wander between cores and two
    single-threaded units side by side ran about 15 % slower each than alone; pinned, as fast
    (tests/bench/student_jobs.py, docs/student.md)."""
    die_with_parent(parent)
    ignore_in_worker()
    if not cpus:
        return
    with counter.get_lock():
        k = counter.value
        counter.value += 1
    os.sched_setaffinity(0, {cpus[k % len(cpus)]})


def _worker_unit(teacher_dir: Path, cfg: StudentConfig, seed: int, unit: int, q):
    run = StudentRun.plan(teacher_dir, cfg)
    result = run.train_unit(seed, _QueueBar(q, unit), verify_hashes=False)  # the parent checked the hashes
    q.put(("done", unit, None, None))
    return result


def _claim(runs: list[StudentRun], stack: ExitStack) -> tuple[list[StudentRun], int]:
    """The runs still to train, each claimed until published (or until ``stack`` closes), in one order for every
    invocation; and how many were complete already."""
    pending, skipped, seen = [], 0, set()
    for run in sorted(runs, key=lambda r: str(r.path)):
        if run.path in seen:
            continue
        seen.add(run.path)
        if run.claim():
            stack.callback(run.release)
            pending.append(run)
        else:
            skipped += 1
    return pending, skipped


class Units(Protocol):
    """A way to run units: ``submit`` one (``index`` numbers it in progress messages), ``workers`` (how many now),
    ``listen`` (relay the workers' progress messages ``(kind, unit, a, b)`` to ``handle`` while open)."""

    def submit(self, index: int, run: StudentRun, seed: int) -> Future: ...

    def workers(self) -> int: ...

    def listen(self, handle: Callable[[tuple], None]) -> AbstractContextManager: ...


def train_runs(runs: list[StudentRun], jobs: int = 1, cluster: str | None = None,
               remote: str | None = None) -> tuple[int, int]:
    """Train every run not yet complete; returns (trained now, already complete). ``cluster`` (a Dask scheduler's
    address, a scheduler file, or ``local``) sends the units to that cluster's workers instead of this machine's
    pool; those that do not share this filesystem pull the teacher cache from ``remote``."""
    from pipeline.blas import warn_if_generic

    warn_if_generic()
    with ExitStack() as stack:
        pending, skipped = _claim(runs, stack)
        units = [(run, seed) for run in pending for seed in run.config.seeds]
        if not units:
            return 0, skipped
        if cluster:
            from stages.student.cluster import DaskUnits

            where = stack.enter_context(DaskUnits.open(cluster, pending, remote, jobs))
            log.info("%d run(s), %d (config, seed) unit(s) on the cluster %s (%d worker(s) now)", len(pending),
                     len(units), where.address, where.workers())
            _train_units(units, where)
            return len(pending), skipped
        jobs = max(1, min(jobs, len(units)))
        log.info("%d run(s), %d (config, seed) unit(s) on %d worker(s)", len(pending), len(units), jobs)
        if jobs == 1:
            for run in pending:
                run.train_seeds()
        else:
            _train_units(units, stack.enter_context(ProcessPool.open(jobs)))
        return len(pending), skipped


class ProcessPool:
    """This machine's ``jobs`` spawned worker processes, single-threaded, pinned to a core each when there are no
    more of them than cores; progress comes back through a manager queue drained by a thread."""

    def __init__(self, pool: ProcessPoolExecutor, q, jobs: int) -> None:
        self.pool, self.q, self.jobs = pool, q, jobs

    @classmethod
    @contextmanager
    def open(cls, jobs: int) -> Iterator[ProcessPool]:
        ctx = get_context("spawn")
        manager = SyncManager(ctx=ctx)
        manager.start(die_with_parent, (os.getpid(),))
        cpus = usable_cpus()
        pinned = cpus if 1 < jobs <= len(cpus) else []
        saved = {k: os.environ.get(k) for k in ONE_THREAD}
        os.environ.update(ONE_THREAD)  # inherited by the spawned workers: one BLAS/OpenMP thread each
        try:
            pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                       initargs=(os.getpid(), ctx.Value("i", 0), pinned))
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        try:
            with manager:
                yield cls(pool, manager.Queue(), jobs)
        except BaseException:  # an error or Ctrl-C: the running units stop now, not when they would have finished
            for proc in list((getattr(pool, "_processes", None) or {}).values()):  # CPython's pool keeps them here
                proc.kill()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, index: int, run: StudentRun, seed: int) -> Future:
        return self.pool.submit(_worker_unit, run.teacher_dir, run.config, seed, index, self.q)

    def workers(self) -> int:
        return self.jobs

    @contextmanager
    def listen(self, handle: Callable[[tuple], None]) -> Iterator[None]:
        stop = threading.Event()

        def drain() -> None:
            while not stop.is_set():
                try:
                    msg = self.q.get(timeout=0.1)
                except queue.Empty:
                    continue
                except (EOFError, OSError):
                    return
                handle(msg)

        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
        try:
            yield
        finally:
            stop.set()
            drainer.join(timeout=2)


def _train_units(units: list[tuple[StudentRun, int]], where: Units) -> None:
    """Run every unit where ``where`` says; publish each run as soon as all its seeds are back. One progress line
    for the grid (units done of all, and the workers), one per running unit."""
    with progress() as bar:
        def label() -> str:
            return f"{len(units)} units on {where.workers()} workers"

        overall = bar.add_task(label(), total=len(units))
        tasks: dict[int, int] = {}

        def handle(msg) -> None:
            kind, unit, a, b = msg
            model = units[unit][0].config.model
            if kind == "add" and unit in tasks:  # a unit started again (its worker died): one line, from zero
                bar.reset(tasks[unit], total=b, description=f"{model} {a}")
            elif kind == "add":
                tasks[unit] = bar.add_task(f"{model} {a}", total=b)
            elif kind == "update" and unit in tasks:
                bar.update(tasks[unit], advance=a, description=f"{model} {b}" if b else None)
            elif kind == "done" and unit in tasks:
                bar.remove_task(tasks.pop(unit))

        with where.listen(handle):
            futures = {where.submit(i, run, seed): run for i, (run, seed) in enumerate(units)}
            try:
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        run = futures[fut]
                        complete = run.add(fut.result())  # a unit's error stops everything, nothing half-published
                        bar.update(overall, advance=1, description=label())
                        if complete:
                            run.publish()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
