"""How fast the commands Make runs on every invocation are: `qdllm --help` and `qdllm key`.

Target: each under 1 s (they import no heavy library and hash files through a memo).
Prints the median of 5 runs of each command.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "qdllm --help": ["--help"],
    "qdllm key data": ["key", "data", "--task", "thematic"],
    "qdllm key teacher": ["key", "teacher", "--task", "emotion"],
    "qdllm key all --make": ["key", "all", "--task", "emotion", "--make"],
}


def main(repeats: int = 5) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from pipeline.blas import describe

    print(describe())
    for name, args in COMMANDS.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "stages.cli", *args], check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        print(f"{name:<24} median {statistics.median(times) * 1000:7.0f} ms  (min {min(times) * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
