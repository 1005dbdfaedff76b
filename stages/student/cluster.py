"""Student units on a Dask cluster: ``qdllm student … --cluster ADDRESS`` (or ``QDLLM_CLUSTER``).

A cluster is one more way to run the units of ``jobs.train_runs`` (``DaskUnits`` is its ``Units``): this process
stays the client that claims the runs (key locks), collects every unit's result and publishes each run atomically
when all its seeds are back, exactly as with the local pool, so the runs are the same bit for bit as ``--jobs 1``.

``ADDRESS`` is a scheduler's address (``tcp://host:8786``, ``host:8786``), a scheduler file (JSON, as written by
``dask scheduler --scheduler-file`` or dask-jobqueue), or ``local``: a ``LocalCluster`` on this machine with
``--jobs`` single-threaded worker processes (default: one per usable core), each pinned to a core of its own and
killed with this process, as the pool's are.

On a worker, a unit finds its teacher cache by key: with ``--remote`` in the worker's own ``QDLLM_CACHE_DIR``,
pulled and verified when absent (``pipeline.remote.ensure_teacher_cache``; the client pushes the cache there first
when the remote lacks it); without, at the client's path, which the worker must then share (NFS, one machine).
Either way its hashes are checked once per worker process before anything trains on it, and the worker's own
student key of the run must equal the client's (the same qdllm code), or the unit fails in one sentence.

Faults are Dask's: a worker that dies mid-unit has its unit rescheduled on another worker (up to
``distributed.scheduler.allowed-failures``, default 3, deaths per unit; then ``KilledWorker`` ends the grid and
nothing of an unfinished run is published). Progress messages go from workers to the client as Dask events.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager
from pathlib import Path

from pipeline.errors import QdllmError
from stages.student.jobs import ONE_THREAD, _QueueBar, check_jobs, die_with_parent, usable_cpus
from stages.student.run import StudentRun

log = logging.getLogger(__name__)

LOCAL = "local"
CONNECT_TIMEOUT_S = 10
WAIT_FOR_WORKERS_S = 600  # a batch system (dask-jobqueue) may take minutes to start the first worker
# set in the workers of a `--cluster local` LocalCluster, read by ``dask_setup`` (this module is their preload)
CPUS_ENV, PARENT_ENV = "QDLLM_WORKER_CPUS", "QDLLM_WORKER_PARENT"


def _given(address: str) -> str:
    """How the user gave the cluster, for messages: the environment variable, or the option."""
    import os

    return f"QDLLM_CLUSTER={address}" if os.environ.get("QDLLM_CLUSTER") == address else f"--cluster {address}"


def check_cluster(address: str | None, jobs: int | None) -> None:
    """Refuse, before any work, what cannot run: Dask not installed, ``--jobs`` beside a cluster it cannot size."""
    if not address:
        return
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise QdllmError(f"{_given(address)} needs Dask's distributed package; install the student extra "
                         "(`pip install -e '.[student]'`, or `make setup`).") from None
    if address != LOCAL and jobs is not None:
        raise QdllmError(f"--jobs sets this machine's worker processes, but {_given(address)} runs the units on "
                         "that cluster's workers; leave --jobs out (start workers with `dask worker "
                         "--nthreads 1 --nworkers N`), or use --cluster local --jobs N.")


class _Events:
    """What a worker's unit reports progress into: Dask events under one topic, which the client subscribes to.
    A unit's line says which worker runs it (``… on HOST:PORT``)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def put(self, msg: tuple) -> None:
        from distributed import get_worker

        worker = get_worker()
        kind, unit, a, b = msg
        where = f" on {worker.address.split('://')[-1]}"
        if kind == "add":
            a = f"{a}{where}"
        elif kind == "update" and b:
            b = f"{b}{where}"
        worker.log_event(self.topic, [kind, unit, a, b])


class DaskUnits:
    """Units as tasks of a Dask client: one task per (run, seed), no retries on errors (a unit's error is the
    grid's), rescheduled by the scheduler when the worker running it dies."""

    def __init__(self, client, address: str, remote: str | None) -> None:
        self.client, self.address, self.remote = client, address, remote
        self.executor = client.get_executor(pure=False)
        self.events = _Events(f"qdllm-progress-{uuid.uuid4().hex[:12]}")

    @classmethod
    @contextmanager
    def open(cls, address: str, runs: list[StudentRun], remote: str | None = None,
             jobs: int | None = None) -> Iterator[DaskUnits]:
        """Connect (or start ``local``), wait for a worker, put the teacher caches on ``remote``, yield."""
        from distributed import Client, KilledWorker

        check_cluster(address, None)
        with ExitStack() as stack:
            quiet = logging.getLogger("distributed")  # its INFO lines (each connection, nanny, plugin) are noise here
            stack.callback(quiet.setLevel, quiet.level)
            quiet.setLevel(max(logging.WARNING, logging.getLogger().getEffectiveLevel()))
            if address == LOCAL:
                cluster = stack.enter_context(local_cluster(check_jobs(jobs)))  # --jobs: its worker processes
                client = stack.enter_context(Client(cluster))
            else:
                client = stack.enter_context(_connect(address))
            units = cls(client, address if address != LOCAL else f"{LOCAL} ({client.scheduler.address})", remote)
            units._wait_for_a_worker()
            if remote:
                _share_teacher_caches(runs, remote)
            if _has_dashboard(client):
                log.info("Dask dashboard: %s", client.dashboard_link)
            try:
                yield units
            except KilledWorker as e:
                raise QdllmError(f"{e} Nothing of the runs still training was published; rerun the same command "
                                 "to train them (finished runs are kept).") from None
            except ModuleNotFoundError as e:
                if (e.name or "").split(".")[0] not in ("stages", "pipeline"):
                    raise
                raise QdllmError(f"A worker of {units.address} cannot import {e.name}: install qd-llm (the same "
                                 "version as here, with its student extra) on every worker.") from None

    def _wait_for_a_worker(self) -> None:
        from distributed import TimeoutError as DaskTimeout

        if self.workers():
            return
        log.info("waiting for the cluster's first worker (at most %d s)", WAIT_FOR_WORKERS_S)
        try:
            self.client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
        except (DaskTimeout, TimeoutError):
            raise QdllmError(f"The Dask scheduler at {self.address} had no worker for {WAIT_FOR_WORKERS_S} s; start "
                             "some (`dask worker ADDRESS --nthreads 1`) and run the command again.") from None

    def submit(self, index: int, run: StudentRun, seed: int) -> Future:
        return self.executor.submit(_unit, run.teacher_dir.name, str(run.teacher_dir.resolve()), self.remote,
                                    run.config, run.key.full, seed, index, self.events,
                                    key=f"qdllm-unit-{run.path.name}-seed{seed}-{self.events.topic[-12:]}")

    def workers(self) -> int:
        return int(self.client.scheduler_info(n_workers=0).get("n_workers", 0))

    @contextmanager
    def listen(self, handle: Callable[[tuple], None]) -> Iterator[None]:
        self.client.subscribe_topic(self.events.topic, lambda event: handle(tuple(event[1])))
        try:
            yield
        finally:
            self.client.unsubscribe_topic(self.events.topic)


def _has_dashboard(client) -> bool:
    """Whether the scheduler serves the dashboard's pages: its HTTP server always runs, the pages need bokeh there
    (`pip install bokeh`, on the scheduler's machine)."""
    if "dashboard" not in client.scheduler_info(n_workers=0).get("services", {}):
        return False
    try:
        return bool(client.run_on_scheduler(lambda: __import__("importlib.util").util.find_spec("bokeh") is not None))
    except Exception:  # noqa: BLE001  (a scheduler that refuses to run functions: no link rather than a wrong one)
        return False


@contextmanager
def _connect(address: str):
    from distributed import Client

    if Path(address).is_file():  # checked here: Dask's own reading of a bad file ends in an AssertionError
        import json

        try:
            info = json.loads(Path(address).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = None
        if not isinstance(info, dict) or not isinstance(info.get("address"), str) or "://" not in info["address"]:
            raise QdllmError(f"{_given(address)} is not a Dask scheduler file (a JSON object with the scheduler's "
                             "address, as `dask scheduler --scheduler-file FILE` writes); give that file or the "
                             "address (tcp://HOST:8786).")
    try:
        if Path(address).is_file():
            client = Client(scheduler_file=address, timeout=f"{CONNECT_TIMEOUT_S}s")
        else:
            client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError, ValueError, KeyError, TypeError) as e:  # a scheduler file holding garbage too
        why = " ".join(str(e).split())[:200].rstrip(".") or type(e).__name__
        raise QdllmError(f"Cannot reach the Dask scheduler of {_given(address)} ({why}); start one with `dask "
                         "scheduler` and give its address (tcp://HOST:8786), its scheduler file, or local.") from None
    with client:
        yield client


@contextmanager
def local_cluster(workers: int, env: dict[str, str] | None = None):
    """A ``LocalCluster`` of ``workers`` single-threaded worker processes, as the pool's: one BLAS thread each,
    MindSpore's ops on the calling thread, pinned to a core each when there are no more workers than cores, and
    killed when this process dies. ``env`` adds to each worker's environment."""
    from distributed import LocalCluster

    from stages.student.model import MINDSPORE_ENV

    cpus = usable_cpus()
    pinned = cpus if 1 < workers <= len(cpus) else []
    worker_env = {**ONE_THREAD, **MINDSPORE_ENV, PARENT_ENV: str(os.getpid()),
                  CPUS_ENV: ",".join(map(str, pinned)), **(env or {})}
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=0,
                           silence_logs=logging.ERROR, env=worker_env, preload=[__name__])
    with cluster:
        yield cluster


def dask_setup(worker) -> None:
    """Preload of a ``local_cluster`` worker: die with the client (even when it is killed) and run on one core."""
    parent = os.environ.get(PARENT_ENV)
    if parent:
        die_with_parent(int(parent))
    cpus = [int(c) for c in os.environ.get(CPUS_ENV, "").split(",") if c]
    if cpus and isinstance(worker.name, int):
        core = {cpus[worker.name % len(cpus)]}
        for tid in os.listdir("/proc/self/task"):  # every thread the worker has started so far, and so all later ones
            try:
                os.sched_setaffinity(int(tid), core)
            except OSError:
                pass


def _share_teacher_caches(runs: list[StudentRun], remote: str) -> None:
    """Make sure ``remote`` holds every teacher cache of ``runs``: workers pull them from there by key."""
    from pipeline.remote import push

    for teacher_dir in sorted({run.teacher_dir for run in runs}):
        if push("teacher", teacher_dir.name, remote, cache_root=teacher_dir.parent.parent) == "pushed":
            log.info("pushed teacher cache %s to %s for the cluster's workers", teacher_dir.name, remote)


def _unit(teacher_key: str, teacher_dir: str, remote: str | None, cfg, run_key: str, seed: int, index: int,
          events: _Events):
    """On a worker: one (run, seed) unit on a verified teacher cache."""
    from stages.student.model import MINDSPORE_ENV

    for k, v in {**ONE_THREAD, **MINDSPORE_ENV}.items():  # before MindSpore or the inference threads start
        os.environ.setdefault(k, v)
    run = StudentRun.plan(_teacher_cache(teacher_key, Path(teacher_dir), remote), cfg)
    if run.key.full != run_key:
        raise QdllmError(f"Worker {_where()} computes the student key {run.key.short} where the client has "
                         f"{run_key[:16]}: its qdllm code differs; install the same version on every worker.")
    result = run.train_unit(seed, _QueueBar(events, index), verify_hashes=False)  # ensure_teacher_cache checked it
    events.put(("done", index, None, None))
    return result


def _teacher_cache(key: str, client_dir: Path, remote: str | None) -> Path:
    from pipeline.remote import ensure_teacher_cache

    if remote:
        return ensure_teacher_cache(key, remote)
    try:  # no remote: the worker shares the client's filesystem
        return ensure_teacher_cache(key, None, cache_root=client_dir.parent.parent)
    except QdllmError:
        if (client_dir / "manifest.json").is_file():
            raise
        raise QdllmError(f"Worker {_where()} does not see the teacher cache {client_dir} (it does not share the "
                         "client's filesystem); pass --remote R so that workers pull it from there.") from None


def _where() -> str:
    import socket

    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return socket.gethostname()
