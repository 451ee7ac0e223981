#!/usr/bin/env python3
"""berth's kv-neighbour benchmark: does kv load stall an unrelated module?

`hello` (no host calls) and `counter` (a durable `berth:base/kv` increment
per request, a redb commit) run in one base. The hello p99 is measured with
wrk alone, then while a second wrk keeps 64 concurrent requests on
`counter`, interleaved over rounds. kv calls are async host calls whose redb
commits run on tokio's blocking pool, so hello's p99 should stay close to
its p99 without kv load (before, each commit held the worker thread that
ran the guest).

Usage: bench/neighbours_kv.py [--rounds 3] [--duration 8] [--connections 8]
                              [--kv-connections 64] [--skip-build]
                              [--berth target/debug/berth]  (smoke run)
"""

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
from importlib import util as _util

_spec = _util.spec_from_file_location("berth_throughput", os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.py"))
bench = _util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

COUNTER_WASM = os.path.join(bench.ROOT, "target", "wasm-modules", "wasm32-wasip2", "release", "counter.wasm")


def ensure_wrk():
    """Installs wrk (Debian) when missing; this benchmark needs no other peer."""
    if shutil.which("wrk") is None:
        bench.log("installing wrk with apt-get")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=8, help="wrk connections on hello")
    ap.add_argument("--kv-connections", type=int, default=64, help="concurrent kv requests on counter")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--berth", help="the berth binary (default: the release build; a debug one for a smoke run)")
    args = ap.parse_args()
    ensure_wrk()
    if args.berth:
        bench.RELEASE = os.path.dirname(os.path.abspath(args.berth))
    elif not args.skip_build:
        bench.build()
    tmp = tempfile.mkdtemp(prefix="berth-kv-neighbours-")
    b = bench.Berth(tempfile.mkdtemp(dir=tmp))
    results = {"hello alone": [], f"hello + {args.kv_connections} concurrent kv requests": []}
    kv_rps = []
    try:
        b.install("hello", open(bench.HELLO_WASM, "rb").read(), version="1")
        b.install("counter", open(COUNTER_WASM, "rb").read(), version="1")
        hello = f"http://127.0.0.1:{b.port}/hello"
        counter = f"http://127.0.0.1:{b.port}/counter"
        # The kv load runs a little longer than the measured hello run.
        kv_duration = args.duration + 3
        for rnd in range(args.rounds):
            for name in (list(results) if rnd % 2 == 0 else list(reversed(results))):
                loaded = name != "hello alone"
                kv = None
                if loaded:
                    kv = subprocess.Popen(bench.wrk_command(counter, kv_duration, args.kv_connections, 1),
                                          stdout=subprocess.PIPE, text=True)
                bench.run_wrk(hello, 1, args.connections, 1)
                r = bench.run_wrk(hello, args.duration, args.connections, 1)
                if kv is not None:
                    out, _ = kv.communicate()
                    k = bench.parse_wrk(out)
                    kv_rps.append(k["rps"])
                    bench.log(f"round {rnd + 1} kv load: {k['rps']:.0f} rps, p99 {k['p99']:.3f} ms, errors {k['errors']}")
                bench.log(f"round {rnd + 1} {name}: {r['rps']:.0f} rps, p99 {r['p99']:.3f} ms, errors {r['errors']}")
                results[name].append(r)
    finally:
        b.stop()

    print(f"\n## kv neighbours: `hello` wrk -t1 -c{args.connections} -d{args.duration}s, "
          f"{args.rounds} interleaved rounds, {os.cpu_count()} cores\n")
    print("| hello | requests/s median (min–max) | p50 ms | p99 ms median (min–max) | errors |")
    print("|---|---|---|---|---|")
    p99 = {}
    for name, runs in results.items():
        p99[name] = statistics.median(r["p99"] for r in runs)
        print(f"| {name} | {bench.fmt_range([r['rps'] for r in runs])} "
              f"| {statistics.median(r['p50'] for r in runs):.3f} "
              f"| {bench.fmt_range([r['p99'] for r in runs], '{:.3f}')} "
              f"| {sum(r['errors'] for r in runs)} |")
    names = list(results)
    print(f"\nhello p99 with kv load / without: **{p99[names[1]] / p99[names[0]]:.2f}×**; "
          f"kv load served {bench.fmt_range(kv_rps)} requests/s of `counter`")


if __name__ == "__main__":
    main()
