#!/usr/bin/env python3
"""berth's controller benchmark: from `berth apply` to every replica serving.

Starts a release `berth controller` and N release bases on this machine
(heartbeat interval 100 ms), applies a ModuleDeployment of `hello` with one
replica per base, and measures the time from the apply command's start until
every base answers 200 on the module's route. Two shapes: 1 module x 20 bases,
and M modules x 5 bases (each module its own deployment, applied one after
another, measured until all M x 5 replicas serve). Target: 20 replicas
serving in <= 1 s after apply (Koupleless, quoted: ~10 s per module start).

Each shape runs twice, interleaved: with the controller compiling each module
once for its bases (the default) and with `berth controller --no-code`, where
every base compiles every module itself — the peer the ratio is taken
against. The 1 x 20 shape repeats (--repeat) and the M x 5 shape repeats
(--repeat-many); both report median (min-max). Each run starts only once
the controller lists every base as Ready, and times nothing before that.

Usage: bench/controller.py [--bases 20] [--modules 200] [--repeat 3] [--repeat-many 3] [--skip-build]
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from importlib import util as _util

_spec = _util.spec_from_file_location("berth_throughput", os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.py"))
bench = _util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

BERTH = os.path.join(bench.RELEASE, "berth")


def start_controller(tmp, ship_code):
    """`berth controller` on a port the system picks (it prints the one it got)."""
    extra = [] if ship_code else ["--no-code"]
    proc, (port,) = bench.start_announced(
        [BERTH, "controller", "--listen", "127.0.0.1:0", "--data-dir", tempfile.mkdtemp(dir=tmp)] + extra,
        [r"berth controller serving on http://[\d.]+:(\d+)"])
    return proc, port


def registered_ready(controller_port, names):
    """Whether the controller lists every base in `names` as Ready."""
    status, body = bench.http("GET", f"http://127.0.0.1:{controller_port}/v1/bases", timeout=2)
    if status != 200:
        return False
    ready = {b["heartbeat"]["name"] for b in json.loads(body) if b.get("state") == "Ready"}
    return set(names) <= ready


def start_bases(tmp, n, controller_port, prefix):
    bases = []
    for i in range(n):
        bases.append(bench.Berth(tempfile.mkdtemp(dir=tmp), ["--controller", f"http://127.0.0.1:{controller_port}",
                                                            "--name", f"{prefix}{i}", "--labels", "group=bench",
                                                            "--heartbeat-interval", "100ms"]))
    return bases


def manifest(name, wasm_path, digest, replicas):
    return (f"apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: {name} }}\nspec:\n"
            f"  module: {{ name: {name}, version: 1.0.0, artifact: \"file:{wasm_path}\", digest: \"{digest}\" }}\n"
            f"  replicas: {replicas}\n  baseSelector: {{ group: bench }}\n")


def apply(tmp, controller_port, text):
    path = os.path.join(tmp, "m.yaml")
    with open(path, "w") as f:
        f.write(text)
    subprocess.run([BERTH, "apply", "-f", path, "--controller", f"127.0.0.1:{controller_port}"], check=True,
                   stdout=subprocess.DEVNULL)


def all_serving(bases, routes):
    return all(bench.http("GET", f"http://127.0.0.1:{b.port}{r}", timeout=1)[0] == 200 for b in bases for r in routes)


def digest_of(path):
    import hashlib
    return "sha256:" + hashlib.sha256(open(path, "rb").read()).hexdigest()


def run_shape(tmp, n_bases, n_modules, ship_code):
    ctrl, cport = start_controller(tmp, ship_code)
    bases = start_bases(tmp, n_bases, cport, f"b{n_modules}-")
    try:
        names = [f"b{n_modules}-{i}" for i in range(n_bases)]
        bench.wait_until(lambda: registered_ready(cport, names), timeout=60, what="every base registered and Ready")
        wasm = open(bench.HELLO_WASM, "rb").read()
        artifacts = []
        for i in range(n_modules):
            path = os.path.join(tmp, f"mod{i}.wasm")
            with open(path, "wb") as f:
                f.write(bench.variant(wasm, f"controller-bench-{i}"))
            artifacts.append(path)
        started = time.perf_counter()
        for i, path in enumerate(artifacts):
            apply(tmp, cport, manifest(f"m{i}", path, digest_of(path), n_bases))
        applied = time.perf_counter() - started
        routes = [f"/m{i}" for i in range(n_modules)]
        bench.wait_until(lambda: all_serving(bases, routes), timeout=600, what="all replicas")
        return time.perf_counter() - started, applied
    finally:
        for b in bases:
            b.stop()
        bench.stop(ctrl, [cport])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bases", type=int, default=20)
    ap.add_argument("--modules", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3, help="runs of the 1 x N shape")
    ap.add_argument("--repeat-many", type=int, default=3, help="runs of the M x 5 shape")
    ap.add_argument("--skip-build", action="store_true")
    args = ap.parse_args()
    # No wrk and no wasmtime here: nothing to install.
    if not args.skip_build:
        bench.build()
    tmp = tempfile.mkdtemp(prefix="berth-controller-bench-")
    try:
        one = {True: [], False: []}
        for _ in range(args.repeat):
            for ship in (True, False):
                one[ship].append(run_shape(tmp, args.bases, 1, ship))
        many = {True: [], False: []}
        for _ in range(args.repeat_many):
            for ship in (True, False):
                many[ship].append(run_shape(tmp, 5, args.modules, ship))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def span(runs):
        ms = sorted(r[0] * 1e3 for r in runs)
        return f"**{ms[len(ms) // 2]:.0f} ms** ({ms[0]:.0f}–{ms[-1]:.0f})"

    def span_s(runs, i=0):
        s = sorted(r[i] for r in runs)
        return f"{s[len(s) // 2]:.1f} s ({s[0]:.1f}–{s[-1]:.1f})"

    def median(runs):
        return sorted(r[0] for r in runs)[len(runs) // 2]

    print(f"\n## Controller: `berth apply` → every replica serving ({os.cpu_count()} cores, all processes on this machine, heartbeat 100 ms)\n")
    print("| shape | replicas | compiled once by the controller | every base compiles (`--no-code`) | ratio |")
    print("|---|---|---|---|---|")
    print(f"| 1 module x {args.bases} bases ({args.repeat} runs) | {args.bases} | {span(one[True])} | {span(one[False])} "
          f"| {median(one[False]) / median(one[True]):.1f}x |")
    print(f"| {args.modules} modules x 5 bases ({args.repeat_many} runs) | {args.modules * 5} | **{span_s(many[True])}** "
          f"(applies {span_s(many[True], 1)}) | **{span_s(many[False])}** (applies {span_s(many[False], 1)}) "
          f"| {median(many[False]) / median(many[True]):.1f}x |")


if __name__ == "__main__":
    main()
