"""Benchmark: push and pull of a 20,000-row teacher cache (D=384, C=2) to a loopback S3 API and a directory.

Plain script: `.venv/bin/python tests/bench/cache_transfer.py`. Prints the median of 3 runs
in MB/s (MB = 10^6 bytes of cache files, the manifest and index excluded). The S3 server is
moto on 127.0.0.1, so the numbers measure qdllm's own overhead (streaming, sha256, verify,
atomic publish) plus moto's, not a real network.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import write_synthetic_cache

from pipeline import remote as R
from pipeline.console import setup_logging

ROWS, DIM, CLASSES, REPEATS = 20_000, 384, 2, 3
KEY = "bench00000000000"


def _moto() -> tuple[object, str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    return server, f"http://127.0.0.1:{port}"


def _measure(name: str, remote_for_run, src_root: Path, work: Path, nbytes: int) -> dict[str, float]:
    push_s, pull_s = [], []
    for i in range(REPEATS):
        remote = remote_for_run(i)
        t = time.perf_counter()
        assert R.push("teacher", KEY, remote, cache_root=src_root) == "pushed"
        push_s.append(time.perf_counter() - t)
        dst = work / f"{name}-pull-{i}"
        t = time.perf_counter()
        R.pull("teacher", KEY, remote, cache_root=dst)
        pull_s.append(time.perf_counter() - t)
        shutil.rmtree(dst)
    push, pull = statistics.median(push_s), statistics.median(pull_s)
    return {"push_s": push, "pull_s": pull, "push_MBps": nbytes / 1e6 / push, "pull_MBps": nbytes / 1e6 / pull}


def main() -> None:
    setup_logging(quiet=True)  # no progress bars in the timing
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src_root = work / "src"
        t = time.perf_counter()
        path = write_synthetic_cache(src_root / "teacher" / KEY, n=ROWS, num_classes=CLASSES, dim=DIM, key=KEY)
        nbytes = sum(p.stat().st_size for p in path.glob("*.parquet"))
        print(f"cache: {ROWS} rows, D={DIM}, C={CLASSES}, {nbytes / 1e6:.1f} MB of Parquet "
              f"(written in {time.perf_counter() - t:.1f} s); median of {REPEATS} runs")

        server, endpoint = _moto()
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                          AWS_ENDPOINT_URL=endpoint, AWS_EC2_METADATA_DISABLED="true")
        from pyarrow import fs as pafs

        pafs.S3FileSystem(access_key="bench", secret_key="bench", region="us-east-1", scheme="http",
                          endpoint_override=endpoint.split("://")[1], allow_bucket_creation=True).create_dir("bench")
        try:
            results = {
                "moto S3 (loopback)": _measure("s3", lambda i: f"s3://bench/run{i}", src_root, work, nbytes),
                "local directory": _measure("dir", lambda i: str(work / f"remote-{i}"), src_root, work, nbytes),
            }
        finally:
            server.stop()
        for name, r in results.items():
            print(f"{name:20s} push {r['push_s']:6.2f} s = {r['push_MBps']:7.1f} MB/s   "
                  f"pull (download + sha256 + validate + publish) {r['pull_s']:6.2f} s = {r['pull_MBps']:7.1f} MB/s")


if __name__ == "__main__":
    main()
