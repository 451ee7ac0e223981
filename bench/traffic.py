#!/usr/bin/env python3
"""berth's traffic-rule benchmark: the cost of rules, and switches under load.

1. Throughput and p99 of `hello` with no rules vs with 10 rules ending in a
   sticky 90/10 weighted split, on the same base, interleaved over several
   rounds. Every request (in both configurations) carries what the rules
   look at - the headers, query parameters and cookie they name - with
   values that do not match, so each rule really compares (prefix, regex,
   exact) before it fails, and a random `x-user` key, so the sticky split
   hashes a new key per request (wrk Lua script `rules.lua`). Target: <= 5%
   throughput cost.
2. Failed requests while 20 back-to-back switches (1 -> 2 -> 1 ...) happen
   under wrk load, once per round. Target: 0.

Usage: bench/traffic.py [--rounds 3] [--duration 8]
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

HELLO_V2 = os.path.join(bench.ROOT, "target", "wasm-modules", "hello-v2", "wasm32-wasip2", "release", "hello.wasm")

TEN_RULES = {"rules": [
    {"name": "beta", "match": [{"on": "header", "name": "x-beta", "exact": "yes"}], "version": "2"},
    {"name": "canary-query", "match": [{"on": "query", "name": "canary", "prefix": "1"}], "version": "2"},
    {"name": "group-cookie", "match": [{"on": "cookie", "name": "group", "regex": "^b[0-9]+$"}], "version": "2"},
    {"name": "office", "match": [{"on": "clientIp", "cidr": "10.0.0.0/8"}], "version": "2"},
    {"name": "v2-path", "match": [{"on": "path", "prefix": "/hello/v2"}], "version": "2"},
    {"name": "mobile", "match": [{"on": "header", "name": "user-agent", "regex": "iPhone|Android"}], "version": "2"},
    {"name": "tenant", "match": [{"on": "header", "name": "x-tenant", "exact": "acme"}], "version": "2"},
    {"name": "debug", "match": [{"on": "query", "name": "debug"}], "version": "2"},
    {"name": "both", "match": [{"on": "header", "name": "x-a"}, {"on": "header", "name": "x-b"}], "version": "2"},
    {"name": "gray", "split": [{"version": "1", "weight": 90}, {"version": "2", "weight": 10}],
     "stickyBy": {"on": "header", "name": "x-user"}},
]}


# What each request carries: every header, query parameter and cookie the
# rules above name, with a value that does not match, and a random user key
# for the sticky split. wrk runs one Lua state per thread; `setup` numbers
# them so each seeds its own random sequence.
RULES_LUA = r"""
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

function init(args)
  math.randomseed(os.time() * 100 + id)
  wrk.headers["x-beta"] = "no"
  wrk.headers["x-tenant"] = "globex"
  wrk.headers["user-agent"] = "Mozilla/5.0 (X11; Linux x86_64) wrk"
  wrk.headers["x-a"] = "1"
  wrk.headers["cookie"] = "session=4f2a9c; group=a17; theme=dark"
end

function request()
  wrk.headers["x-user"] = "user-" .. math.random(1, 10000000)
  return wrk.format("GET", "/hello?canary=0&page=2")
end
"""


def put_rules(b, rules):
    status, body = bench.http("PUT", f"http://127.0.0.1:{b.ops}/v1/modules/hello/rules",
                              body=json.dumps(rules).encode(), headers={"content-type": "application/json"})
    assert status == 200, (status, body)


def switch(b, version):
    status, body = bench.http("POST", f"http://127.0.0.1:{b.ops}/v1/modules/hello/switch",
                              body=json.dumps({"version": version}).encode(), headers={"content-type": "application/json"})
    assert status == 200, (status, body)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--skip-build", action="store_true")
    args = ap.parse_args()
    bench.ensure_tools(wasmtime=False)  # wrk only: no wasmtime peer here
    if not args.skip_build:
        bench.build()
    tmp = tempfile.mkdtemp(prefix="berth-traffic-")
    b = bench.Berth(tempfile.mkdtemp(dir=tmp))
    results = {"no rules": [], "10 rules + sticky 90/10 split": []}
    try:
        b.install("hello", open(bench.HELLO_WASM, "rb").read(), version="1")
        status, body = bench.http("POST", f"http://127.0.0.1:{b.ops}/v1/modules?name=hello&version=2&activate=false",
                                  body=open(HELLO_V2, "rb").read(), headers={"content-type": "application/wasm"})
        assert status == 201, (status, body)
        url = f"http://127.0.0.1:{b.port}/hello"
        script = os.path.join(tmp, "rules.lua")
        with open(script, "w") as f:
            f.write(RULES_LUA)
        for rnd in range(args.rounds):
            for name in (list(results) if rnd % 2 == 0 else list(reversed(results))):
                put_rules(b, TEN_RULES if name.startswith("10") else {})
                bench.run_wrk(url, 2, args.connections, 2, script)
                r = bench.run_wrk(url, args.duration, args.connections, 2, script)
                bench.log(f"round {rnd + 1} {name}: {r['rps']:.0f} rps, p99 {r['p99']:.3f} ms, errors {r['errors']}")
                results[name].append(r)

        # 20 back-to-back switches under load, once per round.
        put_rules(b, {})
        switch_runs = []
        for rnd in range(args.rounds):
            wrk = subprocess.Popen(bench.wrk_command(url, 6, args.connections, 2), stdout=subprocess.PIPE, text=True)
            time.sleep(1)
            started = time.perf_counter()
            for i in range(20):
                switch(b, "2" if i % 2 == 0 else "1")
                time.sleep(0.05)
            switching = time.perf_counter() - started
            out, _ = wrk.communicate()
            run = bench.parse_wrk(out)
            bench.log(f"round {rnd + 1} switches: {run['requests']} requests, {run['errors']} failed, {switching:.2f} s switching")
            switch_runs.append((run["requests"], run["errors"], switching))
    finally:
        b.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n## Traffic rules: `hello`, wrk -t2 -c{args.connections} -d{args.duration}s, {args.rounds} interleaved rounds, {os.cpu_count()} cores\n")
    print("| configuration | requests/s median (min–max) | p50 ms median (min–max) | p99 ms median (min–max) | errors |")
    print("|---|---|---|---|---|")
    med = {}
    for name, runs in results.items():
        rps = [r["rps"] for r in runs]
        med[name] = statistics.median(rps)
        print(f"| {name} | {bench.fmt_range(rps)} | {bench.fmt_range([r['p50'] for r in runs], '{:.3f}')} | "
              f"{bench.fmt_range([r['p99'] for r in runs], '{:.3f}')} | {sum(r['errors'] for r in runs)} |")
    names = list(results)
    cost = (1 - med[names[1]] / med[names[0]]) * 100
    per_round = [(1 - b_["rps"] / a["rps"]) * 100 for a, b_ in zip(results[names[0]], results[names[1]])]
    print(f"\nthroughput cost of the rules: **{cost:.1f}%** (medians; per round "
          f"{min(per_round):.1f}% to {max(per_round):.1f}%)\n")
    print(f"## 20 back-to-back switches under load, {len(switch_runs)} rounds (each inside a 6 s wrk run)\n")
    print("| round | requests | failed (non-2xx or socket errors) | switching s |")
    print("|---|---|---|---|")
    for i, (total, bad, switching) in enumerate(switch_runs):
        print(f"| {i + 1} | {total} | {bad} | {switching:.2f} |")
    print(f"\n**{sum(r[1] for r in switch_runs)} failed** of {sum(r[0] for r in switch_runs)} requests in all")


if __name__ == "__main__":
    main()
