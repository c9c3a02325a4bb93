"""Benchmark `neosft data build` against a naive baseline on a synthetic corpus (>= 200 MB).

The baseline is what one writes first: json.load of the whole file, one loop per variant over
the records, json.dumps per row. Both run as subprocesses, one after the other, and must write
the same rows. Prints wall time, peak RSS and their ratios.

With `--rules reilx` the baseline runs REILX's rules (`neosft.data.reilx.RULES`, the scripts' functions) the
same naive way and both must write the same bytes; `neosft data build --rules seed` runs too, alternated, for
the cost of the REILX rules against the seed's.

    python bench/build.py [--mb 200] [--runs 3] [--keep DIR] [--rules seed|reilx]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus  # noqa: E402

from neosft.artifacts import Manifest  # noqa: E402

NAIVE = r"""
import json, os, sys
from neosft.data.records import parse_record
from neosft.variants import VARIANTS
source, out = sys.argv[1], sys.argv[2]
with open(source, encoding="utf-8") as f:
    records = json.load(f)
for name, variant in VARIANTS.items():
    os.makedirs(f"{out}/{name}", exist_ok=True)
    with open(f"{out}/{name}/part-00000.jsonl", "w", encoding="utf-8") as f:
        for record in records:
            conv = parse_record(record)
            if isinstance(conv, str):
                continue
            for instruction, output in variant.pairs(conv.rounds, "\n\n"):
                row = {"instruction": instruction, "input": "", "output": output}
                if conv.system is not None:
                    row["system"] = conv.system
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
"""

NAIVE_REILX = r"""
import json, os, sys
from neosft.data.reilx import RULES
source, out = sys.argv[1], sys.argv[2]
with open(source, encoding="utf-8") as f:
    records = json.load(f)
for name, (rule, _) in RULES.items():
    os.makedirs(f"{out}/{name}", exist_ok=True)
    with open(f"{out}/{name}/part-00000.jsonl", "w", encoding="utf-8") as f:
        for record in records:
            try:
                lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rule(record)]
                [line.encode("utf-8") for line in lines]
            except Exception:  # where the script would have raised: skipped
                continue
            f.writelines(lines)
"""


def measure(cmd: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (all processes) and peak RSS (MB, the largest process) of `cmd`, run as the
    only child of a fresh interpreter. CPU seconds say what wall time hides on a machine shared with others."""
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter();"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL);"
        "r = resource.getrusage(resource.RUSAGE_CHILDREN);"
        "print(time.perf_counter() - t, r.ru_utime + r.ru_stime, r.ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", probe, *cmd], check=True, capture_output=True, text=True)
    wall, cpu, peak_kb = out.stdout.split()
    return float(wall), float(cpu), int(peak_kb) / 1024


def rows(parts: list[Path]) -> list:
    return [json.loads(line) for part in parts for line in part.read_text(encoding="utf-8").splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=200, help="corpus size in MB (default 200)")
    ap.add_argument("--keep", help="work in this folder and keep it")
    ap.add_argument("--runs", type=int, default=3, help="runs of each, alternated (default 3)")
    ap.add_argument("--rules", choices=["seed", "reilx"], default="seed", help="conversion rules (default seed)")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="neosft-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    source = work / "corpus.json"
    if not source.exists() or source.stat().st_size < args.mb * 1e6:
        print(f"writing a {args.mb:.0f} MB synthetic corpus ...", flush=True)
        corpus.write(str(source), args.mb)
    size_mb = source.stat().st_size / 1e6

    naive, built, seed = [], [], []
    build = [sys.executable, "-m", "neosft", "data", "build", str(source), "--out"]
    for _ in range(args.runs):  # alternated, so a slow spell of a shared machine hits both
        script = NAIVE if args.rules == "seed" else NAIVE_REILX
        naive.append(measure([sys.executable, "-c", script, str(source), str(work / "naive")]))
        built.append(measure([*build, str(work / "neosft"), "--rules", args.rules]))
        if args.rules == "reilx":
            seed.append(measure([*build, str(work / "seed")]))

    manifest = Manifest.read(str(work / "neosft"))
    for variant in ("single", "all_pair") if args.rules == "seed" else manifest.variants:
        ours = [work / "neosft" / f for f in manifest.variants[variant].files]
        theirs = work / "naive" / variant / "part-00000.jsonl"
        if args.rules == "seed":
            assert rows([theirs]) == rows(ours), f"{variant} rows differ"
        else:
            assert theirs.read_bytes() == b"".join(p.read_bytes() for p in ours), f"{variant} bytes differ"
    print(f"corpus: {size_mb:.0f} MB, {manifest.source.records:,} records, {args.runs} run(s) each")
    print(f"{'':<8}{'wall s (min..max)':>20}{'MB/s':>8}{'CPU s':>8}{'peak RSS MB':>13}")
    for name, runs in (("naive", naive), ("neosft", built), *((("seed", seed),) if seed else ())):
        walls = sorted(w for w, _, _ in runs)
        print(
            f"{name:<8}{walls[0]:>9.2f}..{walls[-1]:<9.2f}{size_mb / statistics.median(walls):>8.1f}"
            f"{statistics.median(c for _, c, _ in runs):>8.1f}{max(m for _, _, m in runs):>13.0f}"
        )
    ratios = sorted(n[0] / b[0] for n, b in zip(naive, built))
    print(
        f"speed-up: median {statistics.median(ratios):.2f}x, runs {ratios[0]:.2f}x..{ratios[-1]:.2f}x (target >= 3x); "
        f"neosft peak RSS {max(m for _, _, m in built):.0f} MB (target <= 300 MB); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    if seed:
        costs = sorted(b[0] / s[0] for b, s in zip(built, seed))
        cpu = statistics.median(b[1] / s[1] for b, s in zip(built, seed))
        print(
            f"--rules reilx against --rules seed: wall median {statistics.median(costs):.2f}x "
            f"(runs {costs[0]:.2f}x..{costs[-1]:.2f}x), CPU {cpu:.2f}x"
        )


if __name__ == "__main__":
    main()
