#!/usr/bin/env python3
"""berth's CPU-neighbour benchmark: does a misbehaving module slow `hello`?

One release base serves `hello`, `spin` (loops forever; its deadline,
`timeoutMs` 200, interrupts it: 504) and `hog` (allocates without end; its
16 MiB memory limit stops it: 500). `hello` is driven by wrk alone, then
while two more wrk processes keep `--neighbour-connections` requests in
flight on each of `spin` and `hog` (both saturating their limits the whole
time), interleaved over rounds. With `--cpu-share X` the two neighbours are
also installed with `limits.cpu` X cores each (their requests queue past
it), as a second loaded row. A last row is the reference the OS gives
without berth: hello beside one busy loop per core in *other* processes
(`python3 -c "while True: pass"`) at niceness `--outside-nice` (19, the
lowest; a negative value leaves the row out).

Targets (issue #16): beside the neighbours, hello keeps >= 50% of its
requests/s alone, and its p99 stays <= 3x its p99 alone.

Usage: bench/neighbours.py [--rounds 3] [--duration 8] [--connections 8]
                           [--neighbour-connections 4] [--cpu-share 0.25] [--outside-nice 19]
                           [--skip-build] [--berth target/debug/berth]  (smoke run)
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from importlib import util as _util

_spec = _util.spec_from_file_location("berth_throughput", os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.py"))
bench = _util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

MODULES_DIR = os.path.join(bench.ROOT, "target", "wasm-modules", "wasm32-wasip2", "release")


def wasm(name):
    path = os.path.join(MODULES_DIR, f"{name}.wasm")
    assert os.path.exists(path), f"{path} is missing: build the workspace (crates/example-modules builds it)"
    return open(path, "rb").read()


def start_base(tmp, cpu_share):
    b = bench.Berth(tempfile.mkdtemp(dir=tmp))
    b.install("hello", wasm("hello"))
    neighbour = {"cpu": cpu_share} if cpu_share else {}
    b.install("spin", wasm("spin"), limits={"timeoutMs": 200, **neighbour})
    b.install("hog", wasm("hog"), limits={"memoryMib": 16, **neighbour})
    # Each neighbour answers the way it should: the deadline, the memory limit.
    status, _ = bench.http("GET", f"http://127.0.0.1:{b.port}/spin", timeout=5)
    assert status == 504, f"spin answered {status}, not 504 (deadline)"
    status, _ = bench.http("GET", f"http://127.0.0.1:{b.port}/hog", timeout=5)
    assert status == 500, f"hog answered {status}, not 500 (memory limit)"
    return b


def busy_loops(nice):
    """One busy loop per core in processes of their own, at niceness `nice`."""
    return [subprocess.Popen(["nice", "-n", str(nice), "python3", "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 2)]


def measure(b, args, load):
    """hello's wrk figures, with the two neighbours saturated when `load` is
    "modules", with busy loops in other processes when it is "outside"."""
    neighbours = []
    outside = busy_loops(args.outside_nice) if load == "outside" else []
    if outside:
        time.sleep(0.5)
    if load == "modules":
        for path in ("spin", "hog"):
            neighbours.append(subprocess.Popen(
                bench.wrk_command(f"http://127.0.0.1:{b.port}/{path}", args.duration + 4,
                                  args.neighbour_connections, 1),
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        time.sleep(1)  # the neighbours are saturating before hello is measured
    try:
        r = bench.run_wrk(f"http://127.0.0.1:{b.port}/hello", args.duration, args.connections, 1)
    finally:
        for proc in outside:
            proc.kill()
            proc.wait()
        loads = []
        for proc in neighbours:
            out, _ = proc.communicate()
            loads.append(bench.parse_wrk(out))
    r["neighbours"] = loads
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=8, help="wrk connections on hello")
    ap.add_argument("--neighbour-connections", type=int, default=4, help="wrk connections on each of spin and hog")
    ap.add_argument("--cpu-share", type=float, default=0.25,
                    help="limits.cpu of spin and hog in the second loaded row (0: no such row)")
    ap.add_argument("--outside-nice", type=int, default=19,
                    help="niceness of the busy loops in the reference row (negative: no such row)")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--berth", help="a berth binary to use instead of the release build (smoke runs)")
    args = ap.parse_args()

    bench.ensure_tools(wasmtime=False)
    if args.berth:
        bench.RELEASE = os.path.dirname(os.path.abspath(args.berth))
    elif not args.skip_build:
        bench.build()
    configs = [("hello alone", 0, None), ("beside spin + hog", 0, "modules")]
    if args.cpu_share:
        configs.append((f"beside spin + hog at limits.cpu {args.cpu_share:g} each", args.cpu_share, "modules"))
    if args.outside_nice >= 0:
        configs.append((f"reference: beside {os.cpu_count() or 2} busy loops in other processes at nice "
                        f"{args.outside_nice}", 0, "outside"))
    results = {name: [] for name, _, _ in configs}
    tmp = tempfile.mkdtemp(prefix="berth-neighbours-")
    try:
        for rnd in range(args.rounds):
            for name, share, load in configs[rnd % len(configs):] + configs[:rnd % len(configs)]:
                b = start_base(tmp, share)
                try:
                    bench.run_wrk(f"http://127.0.0.1:{b.port}/hello", 2, args.connections, 1)  # warm-up
                    r = measure(b, args, load)
                finally:
                    b.stop()
                bench.log(f"round {rnd + 1} {name}: {r['rps']:.0f} rps, p50 {r['p50']:.3f} ms, "
                          f"p99 {r['p99']:.3f} ms, errors {r['errors']}; neighbours "
                          + json.dumps([{k: n[k] for k in ('rps', 'errors')} for n in r["neighbours"]]))
                results[name].append(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    f = bench.fmt_range
    print(f"\n## CPU neighbours: hello wrk -t1 -c{args.connections} -d{args.duration}s; spin and hog "
          f"wrk -t1 -c{args.neighbour_connections} each; {args.rounds} interleaved rounds\n")
    print("| hello | requests/s median (min–max) | p50 ms | p99 ms | hello errors | spin, hog requests/s (all 504/500) |")
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        nb = " / ".join(f(n) for n in zip(*[[x["rps"] for x in r["neighbours"]] for r in runs])) if runs[0]["neighbours"] else "—"
        print(f"| {name} | {f([r['rps'] for r in runs])} | {f([r['p50'] for r in runs], '{:.3f}')} | "
              f"{f([r['p99'] for r in runs], '{:.3f}')} | {sum(r['errors'] for r in runs)} | {nb} |")
    alone = results["hello alone"]
    print()
    for name, runs in results.items():
        if name == "hello alone":
            continue
        rps = statistics.median(r["rps"] for r in runs) / statistics.median(r["rps"] for r in alone)
        p99 = statistics.median(r["p99"] for r in runs) / statistics.median(r["p99"] for r in alone)
        targets = ("", "") if name.startswith("reference") else (" (target >= 50%)", " (target <= 3x)")
        print(f"- {name}: hello keeps **{rps:.0%}** of its requests/s alone{targets[0]}, "
              f"p99 **{p99:.1f}x** alone{targets[1]}")


if __name__ == "__main__":
    main()
