#!/usr/bin/env python3
"""berth's density benchmark: 1,000 distinct modules in one base.

Generates 1,000 distinct artifacts from `hello` (the same code plus a custom
section each, so each has its own digest, its own compile and its own
cache entry), installs them all into one release base, and reports:

- base RSS before and after, and RSS per idle installed module;
- total and per-module install time, cold (compiled) and warm (uninstalled
  and reinstalled from the compile cache);
- latency (p50, p99), throughput and failed requests of requests spread at
  random over all 1,000 modules (wrk with a Lua script picking a module per
  request), as median (min-max) over `--rounds` wrk runs; any failed
  request fails the benchmark.

Targets: <= 1 MB RSS per idle module, <= 20 ms warm install each, all
1,000 served from one base.

Usage: bench/density.py [--modules 1000] [--duration 10] [--rounds 3]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from importlib import util as _util

_spec = _util.spec_from_file_location("berth_throughput", os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.py"))
bench = _util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modules", type=int, default=1000)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="wrk runs of the spread load")
    ap.add_argument("--skip-build", action="store_true")
    args = ap.parse_args()
    bench.ensure_tools(wasmtime=False)  # wrk only: no wasmtime peer here
    if not args.skip_build:
        bench.build()
    wasm = open(bench.HELLO_WASM, "rb").read()
    n = args.modules
    artifacts = [bench.variant(wasm, f"density-{i}") for i in range(n)]
    tmp = tempfile.mkdtemp(prefix="berth-density-")
    b = bench.Berth(tempfile.mkdtemp(dir=tmp))
    try:
        time.sleep(0.5)
        before = rss_mb(b.proc.pid)
        cold, cold_wall = [], time.perf_counter()
        for i, artifact in enumerate(artifacts):
            info, _ = b.install(f"m{i}", artifact)
            cold.append(info["installDurationMs"])
        cold_wall = time.perf_counter() - cold_wall
        # Every module answers.
        for i in range(n):
            status, body = bench.http("GET", f"http://127.0.0.1:{b.port}/m{i}")
            assert status == 200 and body == b"Hello from berth!\n", (i, status, body)
        time.sleep(0.5)
        idle = rss_mb(b.proc.pid)

        script = os.path.join(tmp, "spread.lua")
        with open(script, "w") as f:
            f.write(f'request = function() return wrk.format("GET", "/m" .. math.random(0, {n - 1})) end\n')
        spread = []
        for rnd in range(args.rounds):
            r = bench.run_wrk(f"http://127.0.0.1:{b.port}", args.duration, args.connections, 2, script)
            bench.log(f"spread round {rnd + 1}: {r['rps']:.0f} rps, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, "
                      f"{r['errors']} failed of {r['requests']}")
            spread.append(r)
        failed = sum(r["errors"] for r in spread)
        total = sum(r["requests"] for r in spread)
        after_load = rss_mb(b.proc.pid)

        # A cold install serves on Winch code and leaves Cranelift's (and the
        # cache entry of both) to a background optimizer: wait until every
        # module's code is in the cache, so the warm installs below hit it.
        waited = time.perf_counter()
        while True:
            status, body = bench.http("GET", f"http://127.0.0.1:{b.ops}/v1/modules")
            assert status == 200, (status, body)
            tiers = [m.get("tier") for m in json.loads(body)["modules"]]
            left = sum(1 for t in tiers if t != "cranelift")
            if left == 0:
                break
            assert time.perf_counter() - waited < 900, f"{left} modules still without Cranelift code after 900 s"
            bench.log(f"waiting for the optimizer: {left} of {n} modules still on Winch code")
            time.sleep(5)
        warm, warm_wall = [], time.perf_counter()
        for i, artifact in enumerate(artifacts):
            b.uninstall(f"m{i}")
            info, _ = b.install(f"m{i}", artifact)
            assert info["compileCache"] == "hit", info
            warm.append(info["installDurationMs"])
        warm_wall = time.perf_counter() - warm_wall
        for i in range(n):
            status, _ = bench.http("GET", f"http://127.0.0.1:{b.port}/m{i}")
            assert status == 200
        time.sleep(0.5)
        warm_idle = rss_mb(b.proc.pid)
    finally:
        b.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    per_module_kb = (idle - before) * 1024 / n
    print(f"\n## Density: {n} distinct `hello` modules in one base ({os.cpu_count()} cores)\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| base RSS, empty | {before:.1f} MB |")
    print(f"| base RSS, {n} modules installed and each called once | {idle:.1f} MB |")
    print(f"| **RSS per idle installed module** | **{per_module_kb:.0f} KB** |")
    print(f"| base RSS after the spread load | {after_load:.1f} MB |")
    print(f"| base RSS after all {n} were uninstalled and reinstalled from the cache (code mapped from disk), each called once | {warm_idle:.1f} MB ({(warm_idle - before) * 1024 / n:.0f} KB per module) |")
    print(f"| cold install (compile), per module median (p99) | {statistics.median(cold):.1f} ms ({sorted(cold)[int(n * 0.99) - 1]:.1f} ms) |")
    print(f"| cold install, all {n} | {cold_wall:.1f} s |")
    print(f"| **warm install (cache hit), per module median (p99)** | **{statistics.median(warm):.2f} ms** ({sorted(warm)[int(n * 0.99) - 1]:.2f} ms) |")
    print(f"| warm uninstall + install, all {n} | {warm_wall:.1f} s |")
    rng = lambda key, f: bench.fmt_range([r[key] for r in spread], f)  # noqa: E731
    print(f"| requests spread over all {n} modules (wrk -t2 -c{args.connections} -d{args.duration}s, {len(spread)} runs; "
          f"median (min–max)) | {rng('rps', '{:.0f}')} req/s, p50 {rng('p50', '{:.2f}')} ms, **p99 {rng('p99', '{:.2f}')} ms** |")
    print(f"| failed requests during the spread load (non-2xx or socket errors) | **{failed}** of {total} |")
    if failed:
        sys.exit(f"{failed} of {total} requests failed during the spread load (required: 0)")


if __name__ == "__main__":
    main()
