"""Student grids on a Dask cluster (`--cluster`): a LocalCluster of 2 worker processes, each with its own cache root,
the teacher cache reached only through a file:// remote; the runs are those of `--jobs 1` bit for bit, also when the
client is interrupted and restarted, and when a worker is killed mid-unit."""

import copy
import logging
import os
import signal
import threading
import time

import pytest

from helpers import run_results, write_synthetic_cache
from pipeline.config import StudentConfig
from pipeline.publish import is_complete
from stages.student.jobs import ONE_THREAD, train_runs
from stages.student.run import StudentRun

distributed = pytest.importorskip("distributed")

SMALL = [StudentConfig(n_qubits=3, epochs=2, seeds=(0, 1, 2))] + [
    StudentConfig(model=m, n_qubits=3, epochs=2, seeds=(0, 1, 2)) for m in ("twin", "logreg", "mlp")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(scheduler address, each worker's cache root, a client): 2 single-threaded worker processes that share no
    cache directory with the test (the client) or with each other."""
    from distributed import Client, LocalCluster

    from stages.student.model import MINDSPORE_ENV

    roots = [tmp_path_factory.mktemp(f"worker{i}") for i in range(2)]
    env = {**ONE_THREAD, **MINDSPORE_ENV}
    with LocalCluster(n_workers=0, threads_per_worker=1, processes=True, memory_limit=0, dashboard_address=":0",
                      silence_logs=logging.ERROR, env=env) as cluster:
        for root in roots:
            ((name, spec),) = cluster.new_worker_spec().items()
            spec = copy.deepcopy(spec)
            spec["options"]["env"] = {**env, "QDLLM_CACHE_DIR": str(root / "cache"),
                                      "QDLLM_HASH_MEMO": str(root / "memo.json")}
            cluster.worker_spec[name] = spec
        cluster.scale(len(roots))
        with Client(cluster) as client:
            client.wait_for_workers(len(roots), timeout=120)
            yield cluster.scheduler_address, roots, client


def _plan(root, key, configs, **cache):
    teacher = root / "teacher" / key
    if not teacher.exists():
        write_synthetic_cache(teacher, key=key, **cache)
    return [StudentRun.plan(teacher, c) for c in configs]


def _jobs_1(tmp_path, monkeypatch, key, configs, **cache):
    root = tmp_path / "jobs1"
    monkeypatch.setenv("QDLLM_CACHE_DIR", str(root))
    assert train_runs(_plan(root, key, configs, **cache), 1) == (len(configs), 0)
    return run_results(root / "student")


def test_a_grid_on_a_local_cluster_is_the_grid_of_jobs_1_and_a_restart_reuses_finished_runs(
        cluster, tmp_path, monkeypatch):
    address, worker_roots, _ = cluster
    remote = f"file://{tmp_path / 'remote'}"
    expected = _jobs_1(tmp_path, monkeypatch, "t1", SMALL, n=60, dim=8)

    root = tmp_path / "client"
    monkeypatch.setenv("QDLLM_CACHE_DIR", str(root))
    # interrupted after its first run is published: nothing else appears, no half-written run is visible
    publish, published = StudentRun.publish, []

    def interrupted(self):
        if published:
            raise KeyboardInterrupt
        published.append(publish(self))
        return published[-1]

    monkeypatch.setattr(StudentRun, "publish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_runs(_plan(root, "t1", SMALL, n=60, dim=8), cluster=address, remote=remote)
    monkeypatch.setattr(StudentRun, "publish", publish)
    visible = [p for p in (root / "student").iterdir() if not p.name.startswith(".")]
    assert visible == published and is_complete(visible[0])
    # restarted: the finished run is reused by its key, the others are trained
    assert train_runs(_plan(root, "t1", SMALL), cluster=address, remote=remote) == (len(SMALL) - 1, 1)
    assert run_results(root / "student") == expected
    assert train_runs(_plan(root, "t1", SMALL), cluster=address, remote=remote) == (0, len(SMALL))
    # the client put the cache on the remote; each worker pulled its own copy from there, verified
    assert is_complete(tmp_path / "remote" / "teacher" / "t1")
    assert all(is_complete(r / "cache" / "teacher" / "t1") for r in worker_roots)


def _executing(dask_worker):
    return os.getpid(), [str(k) for k, ts in dask_worker.state.tasks.items() if ts.state == "executing"]


def test_a_worker_killed_mid_unit_has_its_unit_run_again_and_the_grid_is_whole_and_the_same(
        cluster, tmp_path, monkeypatch):
    from stages.student.cluster import DaskUnits

    address, _, client = cluster
    configs = [StudentConfig(n_qubits=3, epochs=6, seeds=(0, 1)), StudentConfig(model="logreg", epochs=6, seeds=(0, 1))]
    shape = {"n": 1500, "dim": 8}  # a quantum unit trains for a second or more: long enough to be killed in the middle
    expected = _jobs_1(tmp_path, monkeypatch, "t2", configs, **shape)

    root = tmp_path / "client"
    monkeypatch.setenv("QDLLM_CACHE_DIR", str(root))
    topics, epochs = [], []  # the grid's progress topic; (worker address, description) of each finished epoch
    opened = DaskUnits.__init__

    def spy(self, *args, **kw):
        opened(self, *args, **kw)
        topics.append(self.events.topic)

    monkeypatch.setattr(DaskUnits, "__init__", spy)
    runs = _plan(root, "t2", configs, **shape)
    out: dict = {}
    grid = threading.Thread(target=lambda: out.update(result=train_runs(runs, cluster=address,
                                                                         remote=f"file://{tmp_path / 'remote'}")))
    grid.start()
    while not topics and grid.is_alive():
        time.sleep(0.01)
    first_epoch = threading.Event()

    starts = []  # (unit, description) of every unit started after the subscription

    def on_event(event):
        kind, unit, what, description = event[1]
        if kind == "add":
            starts.append((unit, what))
        if kind == "update" and description and " on " in description:
            epochs.append((unit, description))
            first_epoch.set()

    client.subscribe_topic(topics[0], on_event)
    killed = None
    if first_epoch.wait(timeout=120):  # a unit has trained one epoch of six: kill its worker now
        unit, description = epochs[0]
        worker = description.rsplit(" on ", 1)[1]
        (pid, running), = [v for a, v in client.run(_executing).items() if a.endswith(worker)]
        assert any(k.startswith("qdllm-unit-") for k in running), (epochs, running)
        os.kill(pid, signal.SIGKILL)
        killed, seen = pid, len(starts)
    grid.join(timeout=300)
    assert killed is not None, "no unit was seen training"
    # the unit killed in its first epochs started once more, on a worker that is not the dead one
    again = [what for u, what in starts[seen:] if u == unit]
    assert again and not again[0].endswith(f" on {worker}"), (unit, worker, starts)
    assert out.get("result") == (len(configs), 0)
    assert run_results(root / "student") == expected
    client.wait_for_workers(2, timeout=60)  # the nanny started a new worker process in its place
    assert killed not in [pid for pid, _ in client.run(_executing).values()]


def test_what_cannot_run_on_a_cluster_is_refused_before_any_work():
    from pipeline.errors import QdllmError
    from stages.student.cluster import check_cluster

    with pytest.raises(QdllmError, match="--jobs sets this machine's worker processes, but --cluster tcp://sched:8786"):
        check_cluster("tcp://sched:8786", 2)
    check_cluster("local", 2)  # --jobs sizes a LocalCluster
    check_cluster(None, 2)
