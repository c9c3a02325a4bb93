"""Speed of `neosft submit --variant all --dry-run` (render the chart with the embedded Helm, validate every
object), for each backend (PyTorchJobs; a TrainingRuntime and TrainJobs), beside the bare CLI start-up
(`neosft --version`) measured in the same run, and their ratio. Target: under 1 s (0.46 s, 4.8x the
start-up, on this project's 2-core machines), so that an edit-render loop stays interactive.
tests/test_k8s_cli.py checks what it prints; its speed is measured here, not asserted there.

    .venv/bin/python bench/submit.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def seconds(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "neosft", *args],
        check=True,
        capture_output=True,
        env={"KUBECONFIG": "/nonexistent", "PATH": "/usr/bin:/bin"},
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    backends = ("pytorchjob", "trainjob")
    startup: list[float] = []
    dry_run: dict[str, list[float]] = {b: [] for b in backends}
    for _ in range(rounds):  # alternate, so that other load on the machine hits each alike
        startup.append(seconds("--version"))
        for backend in backends:
            dry_run[backend].append(
                seconds("submit", "--variant", "all", "--run-id", "bench", "--dry-run", "--backend", backend)
            )
    base = statistics.median(startup)
    print(f"neosft --version                                            {base:6.2f} s (median of {rounds})")
    for backend in backends:
        render = statistics.median(dry_run[backend])
        print(
            f"neosft submit --variant all --dry-run --backend {backend:<10}  {render:6.2f} s = "
            f"{render / base:.1f}x the start-up"
        )


if __name__ == "__main__":
    main()
