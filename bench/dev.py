#!/usr/bin/env python3
"""berth's developer-loop benchmark: save-to-serving latency of `berth dev`.

Starts a release `berth base`, scaffolds a module with `berth new`, runs
`berth dev` on it, then edits the source N times. For each edit this script
takes the time right after it wrote the file and polls the module's URL
until the body of the edited version comes back: that is the save-to-serving
time, measured from outside. `berth dev` reports how long cargo compiled
(and its own save-to-serving figure); the headline is the script's time
minus that compile time. Target: <= 200 ms.

Usage: bench/dev.py [--edits 10]
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import queue
import time

from importlib import util as _util

_spec = _util.spec_from_file_location("berth_throughput", os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.py"))
bench = _util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edits", type=int, default=10)
    ap.add_argument("--skip-build", action="store_true")
    args = ap.parse_args()
    if not args.skip_build:
        bench.build()
    berth = os.path.join(bench.RELEASE, "berth")
    # Under target/ so the repository's rust-toolchain.toml applies to the module build.
    work = tempfile.mkdtemp(dir=os.path.join(bench.ROOT, "target"), prefix="bench-dev-")
    base = bench.Berth(tempfile.mkdtemp(dir=work))
    dev = None
    try:
        module = os.path.join(work, "greeter")
        subprocess.run([berth, "new", "greeter", "--dir", module], check=True, stdout=subprocess.DEVNULL)
        ops = f"http://127.0.0.1:{base.ops}"
        dev = subprocess.Popen([berth, "dev", module, "--base", ops], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in dev.stdout], daemon=True).start()

        def next_redeploy():
            """berth dev's next redeploy line: (its ms, compile s, install ms, URL)."""
            deadline = time.time() + 300
            while time.time() < deadline:
                line = lines.get(timeout=300)
                m = re.search(r"serving (\d+) ms after the save \(excluding ([\d.]+) s compiling\), "
                              r"install ([\d.]+) ms, at (\S+)", line)
                if m:
                    return int(m.group(1)), float(m.group(2)), float(m.group(3)), m.group(4)
            raise RuntimeError("berth dev printed no redeploy line")

        def first_deploy():
            """berth dev's first build (no save answered): the URL it serves at."""
            deadline = time.time() + 300
            while time.time() < deadline:
                m = re.search(r"^deployed \S+: serving at (\S+) ", lines.get(timeout=300))
                if m:
                    return m.group(1)
            raise RuntimeError("berth dev printed no first-deploy line")

        url = first_deploy()
        lib = os.path.join(module, "src", "lib.rs")
        results = []
        for i in range(args.edits):
            text = open(lib).read()
            text = re.sub(r'format!\("[^"]*You asked', f'format!("Edit {i}! You asked', text)
            marker = f"Edit {i}! You asked".encode()
            with open(lib, "w") as f:
                f.write(text)
            saved = time.perf_counter()
            while True:
                status, body = bench.http("GET", url, timeout=2)
                if status == 200 and body.startswith(marker):
                    break
                if time.perf_counter() - saved > 300:
                    raise RuntimeError(f"edit {i + 1}: {url} never answered with the edited body")
                time.sleep(0.005)
            wall_ms = (time.perf_counter() - saved) * 1e3
            own_ms, compile_s, install_ms, _ = next_redeploy()
            r = (wall_ms - compile_s * 1e3, wall_ms, compile_s, install_ms, own_ms)
            bench.log(f"edit {i + 1}: new body after {wall_ms:.0f} ms, of which {compile_s:.2f} s cargo "
                      f"(berth dev says {own_ms} ms excl. compile; install {install_ms:.1f} ms)")
            results.append(r)
            time.sleep(0.3)
    finally:
        if dev:
            bench.stop(dev, [])
        base.stop()
        shutil.rmtree(work, ignore_errors=True)

    lat = [r[0] for r in results]
    wall = [r[1] for r in results]
    comp = [r[2] for r in results]
    inst = [r[3] for r in results]
    own = [r[4] for r in results]
    print(f"\n## `berth dev` redeploy ({len(results)} edits of a scaffolded module, release base, {os.cpu_count()} cores)\n")
    print("| measure | median (min–max) |")
    print("|---|---|")
    print(f"| save → new body served (this script's clock), minus cargo's compile | {bench.fmt_range(lat)} ms |")
    print(f"| save → new body served, including cargo's compile | {bench.fmt_range(wall)} ms |")
    print(f"| `berth dev`'s own figure (save → first answer, excluding compile) | {bench.fmt_range(own)} ms |")
    print(f"| of which: install on the base (wasm compile + link) | {bench.fmt_range(inst, '{:.1f}')} ms |")
    print(f"| cargo build (excluded) | {bench.fmt_range(comp, '{:.2f}')} s |")


if __name__ == "__main__":
    main()
