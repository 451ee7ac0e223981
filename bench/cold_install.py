#!/usr/bin/env python3
"""berth's cold-install benchmark: install -> first 200 for the Python and
JavaScript hello components, per compiler tier.

Builds the two hello modules the way a user would (`berth new NAME --lang
python|js` then `berth build`, with the pinned componentize-py and
componentize-js, installed on first use), then for each tier setting of
`berth base --tiers` (`winch,cranelift`, the default, and `cranelift`) and
each component starts a fresh base on an empty data directory (nothing
cached), uploads the artifact and polls the module's URL until it answers
200. The headline is upload -> first 200; the base's CPU time over the
same span is reported too (on a shared machine it moves far less than the
wall time). With tiering it also reports when
Cranelift's code took over (`berth status` shows the tier). Target: <= 1 s
each on Winch code (Cranelift only: 5.4 s Python, 6.7 s JavaScript).

Usage: bench/cold_install.py [--rounds 3] [--skip-build] [--debug]
                              [--tiers winch,cranelift] [--first-only]
                              [--berth PATH]
(`--debug` runs the debug build, for a quick smoke run: not figures;
`--tiers` measures one tier setting only; `--first-only` stops at the
first 200 instead of also waiting for Cranelift to take over; `--berth`
measures another binary, e.g. an older build for an A/B run.)
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

from importlib import util as _util

_spec = _util.spec_from_file_location("berth_throughput", os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.py"))
bench = _util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

LANGS = [("python", "hello-py"), ("js", "hello-js")]
TIERS = ["winch,cranelift", "cranelift"]


def build_components(berth, work):
    """`berth new` + `berth build` for each language; returns {lang: bytes}."""
    out = {}
    for lang, name in LANGS:
        folder = os.path.join(work, name)
        subprocess.run([berth, "new", name, "--lang", lang, "--dir", folder], check=True, stdout=subprocess.DEVNULL)
        t0 = time.perf_counter()
        built = subprocess.run([berth, "build", folder, "-o", "json"], check=True, capture_output=True, text=True)
        artifact = json.loads(built.stdout)["artifact"]
        bench.log(f"built {name}: {os.path.getsize(artifact) / 2**20:.1f} MiB in {time.perf_counter() - t0:.1f} s")
        out[lang] = (name, open(artifact, "rb").read())
    return out


def tier_of(base, name):
    status, body = bench.http("GET", f"http://127.0.0.1:{base.ops}/v1/modules/{name}")
    assert status == 200, (status, body)
    return json.loads(body)["modules"][0].get("tier")


def cpu_seconds(pid):
    """User + system CPU time of process `pid` so far (Linux /proc), or None."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def cold_install(work, tiers, name, wasm, first_only=False):
    """One install on an empty cache: (upload -> first 200 ms, install ms,
    tier at first 200, s until Cranelift took over or None, CPU ms the base
    spent from upload to first 200 or None)."""
    base = bench.Berth(tempfile.mkdtemp(dir=work), ["--tiers", tiers])
    try:
        url = f"http://127.0.0.1:{base.port}/{name}"
        cpu0 = cpu_seconds(base.proc.pid)
        t0 = time.perf_counter()
        # Not base.install: a Cranelift-only install of these takes seconds.
        status, body = bench.http("POST", f"http://127.0.0.1:{base.ops}/v1/modules?name={name}&version=1",
                                  body=wasm, headers={"content-type": "application/wasm"}, timeout=600)
        assert status in (200, 201), (status, body)
        info = json.loads(body)["module"]
        while bench.http("GET", url, timeout=60)[0] != 200:
            if time.perf_counter() - t0 > 120:
                raise RuntimeError(f"{name} did not answer 200 within 120 s")
            time.sleep(0.001)
        first = (time.perf_counter() - t0) * 1e3
        cpu1 = cpu_seconds(base.proc.pid)
        cpu_ms = (cpu1 - cpu0) * 1e3 if cpu0 is not None and cpu1 is not None else None
        tier = tier_of(base, name)
        took_over = None
        if tier == "winch" and not first_only:
            while tier_of(base, name) != "cranelift":
                if time.perf_counter() - t0 > 300:
                    break
                time.sleep(0.05)
            else:
                took_over = time.perf_counter() - t0
        return first, info["installDurationMs"], tier, took_over, cpu_ms
    finally:
        base.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--debug", action="store_true", help="use target/debug (smoke run, not figures)")
    ap.add_argument("--tiers", choices=TIERS, help="measure this tier setting only")
    ap.add_argument("--first-only", action="store_true",
                    help="stop at the first 200 (do not wait for Cranelift to take over)")
    ap.add_argument("--berth", help="a berth binary to measure instead of the release build")
    args = ap.parse_args()
    if args.berth:
        bench.RELEASE = os.path.dirname(os.path.abspath(args.berth))
    elif args.debug:
        bench.RELEASE = os.path.join(bench.ROOT, "target", "debug")
        if not args.skip_build:
            subprocess.run(["cargo", "build", "--workspace", "--bins"], cwd=bench.ROOT, check=True)
    elif not args.skip_build:
        bench.build()
    berth = os.path.join(bench.RELEASE, "berth")
    work = tempfile.mkdtemp(dir=os.path.join(bench.ROOT, "target"), prefix="bench-cold-")
    components = build_components(berth, work)
    results = {}
    for tiers in [args.tiers] if args.tiers else TIERS:
        for lang, (name, wasm) in components.items():
            runs = [cold_install(work, tiers, name, wasm, args.first_only) for _ in range(args.rounds)]
            firsts = [r[0] for r in runs]
            over = [r[3] for r in runs if r[3] is not None]
            results[f"{lang} --tiers {tiers}"] = {
                "size_mib": round(len(wasm) / 2**20, 1),
                "first_200_ms_median": round(statistics.median(firsts), 1),
                "first_200_ms": [round(f, 1) for f in firsts],
                "install_ms": [round(r[1], 1) for r in runs],
                "tier_at_first_200": sorted({r[2] for r in runs}),
                "cranelift_took_over_s": [round(o, 1) for o in over],
                # What survives a shared machine: the base's CPU time.
                "base_cpu_ms_to_first_200": [round(r[4]) for r in runs if r[4] is not None],
            }
            bench.log(f"{lang:6} --tiers {tiers:16} first 200 {bench.fmt_range(firsts)} ms "
                      f"(median {statistics.median(firsts):.0f}), tier {sorted({r[2] for r in runs})}"
                      + (f", Cranelift took over after {bench.fmt_range(over, '{:.1f}')} s" if over else ""))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
