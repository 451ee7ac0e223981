#!/usr/bin/env python3
"""berth's autoscale benchmark: replicas following a traffic curve.

Starts a release `berth controller`, `berth gateway` and 8 bases on this
machine: 6 in group `bench` and 2 buffer bases (`--labels
berth.dev/role=buffer`), and deploys `hello` with
`autoscale: {minReplicas: 1, maxReplicas: 8, target: {rps: 300}}` (short
windows, see --down-window) behind the gateway. Load is Debian's `hey -q`
(rate per worker) through the gateway. A sampler reads every 250 ms the
gateway's answered requests (`berth_gateway_requests_total`, so the rate
is what was served, not what hey meant to send), the controller's desired
count and the endpoint table's ready, non-draining replicas.

- **ramp**: ~50 → ~2,000 → ~50 requests/s over about 60 s (hey runs of
  2 s at stepped rates). Prints replicas at checkpoints and the failed
  requests (non-200 answers and errors as hey reports them; target 0), and
  draws requests/s and replicas over time into a PNG (matplotlib, installed
  by the script into a venv under target/, pinned below).
- **step**: 50 → 1,500 requests/s, N times: time from the step until
  enough replicas serve (ceil(1500 / 300) = 5 ready in the endpoint table),
  and until the controller decided (its first Autoscaled event after the
  step), p50/p99. Target ≤ 2 s. Between steps the load stays at 50/s until
  the deployment is back at one replica.
- **buffer**: 50 → 2,400 requests/s (wants 8: the 6 bases of the group and
  the buffer bases), N times: time from the Autoscaled event that asked for
  more than the group holds to a buffer base's replica ready in the
  endpoint table (both on this machine's clock).

Usage: bench/autoscale.py [--steps 10] [--buffer-steps 5] [--ramp-seconds 60]
                          [--only ramp|step|buffer] [--plot bench/autoscale.png]
                          [--skip-build] [--berth target/release/berth]
A debug build works for a smoke run: --berth target/debug/berth --skip-build
(it may not carry the rates: read its figures as a smoke test only).
"""

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from importlib import util as _util

_spec = _util.spec_from_file_location(
    "berth_throughput", os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.py"))
bench = _util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

SECRET = "bench-secret"
TARGET_RPS = 300
GROUP_BASES = 6
BUFFER_BASES = 2
MATPLOTLIB = "matplotlib==3.9.2"
VENV = os.path.join(bench.ROOT, "target", "bench-venv")
BUFFER_LABEL = "berth.dev/role"


def ensure_hey():
    if shutil.which("hey") is None:
        bench.log("installing hey with apt-get")
        subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "hey"], check=True, stdout=sys.stderr)


def venv_python():
    """A venv under target/ with the pinned matplotlib (created once)."""
    python = os.path.join(VENV, "bin", "python")
    probe = [python, "-c", "import matplotlib, sys; sys.exit(matplotlib.__version__ != '%s')"
             % MATPLOTLIB.split("==")[1]]
    if os.path.exists(python) and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    bench.log(f"creating {VENV} with {MATPLOTLIB}")
    subprocess.run([sys.executable, "-m", "venv", VENV], check=True, stdout=sys.stderr)
    subprocess.run([python, "-m", "pip", "install", "-q", MATPLOTLIB], check=True, stdout=sys.stderr)
    return python


class Fleet:
    """Controller, gateway, 6 group bases and 2 buffer bases; `hello` autoscaled."""

    def __init__(self, berth, tmp, down_window, up_window, report_interval=None):
        self.berth = berth
        self.procs = []
        proc, (self.ctl,) = bench.start_announced(
            [berth, "controller", "--listen", "127.0.0.1:0", "--heartbeat-timeout", "1s",
             "--drain-grace", "500ms", "--data-dir", tempfile.mkdtemp(dir=tmp)],
            [r"berth controller serving on http://[\d.]+:(\d+)"])
        self.procs.append((proc, [self.ctl]))
        self.bases = []
        for i in range(GROUP_BASES + BUFFER_BASES):
            buffer = i >= GROUP_BASES
            name = f"buf{i - GROUP_BASES}" if buffer else f"b{i}"
            labels = "group=bench" + (f",{BUFFER_LABEL}=buffer" if buffer else "")
            proc, (port, ops) = bench.start_announced(
                [berth, "base", "--listen", "127.0.0.1:0", "--ops", "127.0.0.1:0",
                 "--data-dir", tempfile.mkdtemp(dir=tmp), "--controller", f"http://127.0.0.1:{self.ctl}",
                 "--name", name, "--labels", labels, "--heartbeat-interval", "200ms",
                 "--gateway-secret", SECRET],
                bench.BERTH_ANNOUNCES)
            self.procs.append((proc, [port, ops]))
            self.bases.append(name)
        proc, (self.gw,) = bench.start_announced(
            [berth, "gateway", "--listen", "127.0.0.1:0", "--controller", f"http://127.0.0.1:{self.ctl}",
             "--gateway-secret", SECRET]
            + (["--load-report-interval", report_interval] if report_interval else []),
            [r"berth gateway serving on http://[\d.]+:(\d+)"])
        self.procs.append((proc, [self.gw]))
        self.tmp, self.down_window, self.up_window = tmp, down_window, up_window
        self.apply(TARGET_RPS)
        bench.wait_until(lambda: self.ready() == 1 and self.serves(), timeout=60, what="hello through the gateway")

    def apply(self, target):
        """(Re)applies `hello` with `target` requests/s per replica."""
        artifact = bench.HELLO_WASM
        digest = "sha256:" + hashlib.sha256(open(artifact, "rb").read()).hexdigest()
        path = os.path.join(self.tmp, "hello.yaml")
        with open(path, "w") as f:
            f.write("apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: { name: hello }\nspec:\n"
                    f"  module: {{ name: hello, version: 1.0.0, artifact: \"file:{artifact}\", digest: \"{digest}\" }}\n"
                    "  baseSelector: { group: bench }\n"
                    f"  autoscale: {{ minReplicas: 1, maxReplicas: {GROUP_BASES + BUFFER_BASES}, "
                    f"target: {{ rps: {target} }}, scaleUpWindow: {self.up_window}, "
                    f"scaleDownWindow: {self.down_window} }}\n")
        subprocess.run([self.berth, "apply", "-f", path, "--controller", f"127.0.0.1:{self.ctl}"], check=True,
                       stdout=subprocess.DEVNULL)

    def url(self):
        return f"http://127.0.0.1:{self.gw}/hello"

    def serves(self):
        return bench.http("GET", self.url(), timeout=2)[0] == 200

    def endpoints(self):
        """hello's replicas in the endpoint table."""
        status, body = bench.http("GET", f"http://127.0.0.1:{self.ctl}/v1/endpoints", timeout=5)
        if status != 200:
            return []
        for d in json.loads(body)["deployments"]:
            if d["name"] == "hello":
                return d["replicas"]
        return []

    def ready(self, buffer=None):
        """Ready, non-draining replicas (only on buffer bases with buffer=True)."""
        return sum(1 for r in self.endpoints() if r["ready"] and not r["draining"]
                   and (buffer is None or (r.get("labels", {}).get(BUFFER_LABEL) == "buffer") == buffer))

    def deployment(self):
        status, body = bench.http("GET", f"http://127.0.0.1:{self.ctl}/v1/deployments/hello", timeout=5)
        return json.loads(body) if status == 200 else {}

    def desired(self):
        return self.deployment().get("status", {}).get("desired", 0)

    def autoscaled_since(self, ms):
        """Autoscaled events after `ms` (epoch ms): (at_ms, message), oldest first."""
        return [(e["lastMs"], e["message"]) for e in self.deployment().get("events", [])
                if e["reason"] == "Autoscaled" and e["lastMs"] >= ms]

    def served(self):
        """Requests the gateway answered for hello: (200s, others)."""
        status, body = bench.http("GET", f"http://127.0.0.1:{self.gw}/metrics", timeout=5)
        ok = other = 0.0
        for line in body.decode().splitlines():
            m = re.match(r'berth_gateway_requests_total\{([^}]*)\} ([\d.e+]+)', line)
            if m and 'module="hello"' in m.group(1):
                if 'code="200"' in m.group(1):
                    ok += float(m.group(2))
                else:
                    other += float(m.group(2))
        return ok, other

    def stop(self):
        for proc, ports in reversed(self.procs):
            bench.stop(proc, ports)


class Hey:
    """One `hey -z SECS -q PER_WORKER -c WORKERS` run in a thread; parses its report."""

    def __init__(self, url, rate, seconds):
        workers = max(1, min(40, math.ceil(rate / 100)))
        per_worker = max(1, round(rate / workers))
        self.rate = workers * per_worker
        self.ok = 0
        self.failed = []
        self.thread = threading.Thread(
            target=self._run, args=(["hey", "-z", f"{seconds}s", "-c", str(workers), "-q", str(per_worker),
                                     "-t", "10", url],), daemon=True)
        self.thread.start()

    def _run(self, cmd):
        out = subprocess.run(cmd, capture_output=True, text=True).stdout
        section = ""
        for line in out.splitlines():
            t = line.strip()
            if t.endswith("distribution:"):
                section = "codes" if t.startswith("Status code") else "errors" if t.startswith("Error") else ""
                continue
            if not line.startswith("  ") or not t:
                if t:
                    section = ""
                continue
            if section == "codes" and t.startswith("[200]"):
                self.ok += int(t.split()[1])
            elif section in ("codes", "errors"):
                self.failed.append(t)

    def join(self):
        self.thread.join()
        return self


class Sampler:
    """Every 250 ms: the gateway's served rate, desired and ready replicas."""

    def __init__(self, fleet, period=0.25):
        self.fleet, self.period = fleet, period
        self.samples = []  # (t, rps, desired, ready, ready on buffer bases)
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        t0 = time.time()
        last_t, (last_ok, last_other) = t0, self.fleet.served()
        while self.running:
            time.sleep(max(0.0, self.period - (time.time() - last_t)))
            now = time.time()
            ok, other = self.fleet.served()
            rps = (ok + other - last_ok - last_other) / (now - last_t)
            replicas = self.fleet.endpoints()
            ready = [r for r in replicas if r["ready"] and not r["draining"]]
            on_buffer = sum(1 for r in ready if r.get("labels", {}).get(BUFFER_LABEL) == "buffer")
            self.samples.append((now - t0, rps, self.fleet.desired(), len(ready), on_buffer))
            last_t, last_ok, last_other = now, ok, other

    def stop(self):
        self.running = False
        self.thread.join()
        return self.samples


def ramp_rates(seconds, low, peak, segment):
    """Stepped triangle: low → peak → low over `seconds`, one rate per segment."""
    n = max(2, round(seconds / segment))
    half = n / 2
    return [round(low + (peak - low) * (1 - abs(i + 0.5 - half) / half)) for i in range(n)]


def ramp(args, fleet):
    bench.log(f"ramp: {args.low} → {args.peak} → {args.low} requests/s over {args.ramp_seconds} s")
    rates = ramp_rates(args.ramp_seconds, args.low, args.peak, args.segment)
    sampler = Sampler(fleet)
    runs = []
    started = time.time()
    for rate in rates:
        runs.append(Hey(fleet.url(), rate, args.segment).join())
    # The tail: low load while the scale-down window runs out.
    runs.append(Hey(fleet.url(), args.low, args.tail).join())
    elapsed = time.time() - started
    samples = sampler.stop()
    ok = sum(r.ok for r in runs)
    failed = [f for r in runs for f in r.failed]
    print(f"\n### Ramp ({args.low} → {args.peak} → {args.low} requests/s over {args.ramp_seconds} s, "
          f"then {args.tail} s at {args.low}/s; target {TARGET_RPS} requests/s per replica)\n")
    print(f"{ok + len(failed)} requests sent by hey in {elapsed:.0f} s, {ok} answered 200, "
          f"**failed: {len(failed)} lines** {failed[:5] if failed else ''}")
    peak_rps = max(s[1] for s in samples)
    print(f"served rate peaked at {peak_rps:.0f}/s; most replicas ready {max(s[3] for s in samples)}, "
          f"on buffer bases {max(s[4] for s in samples)}\n")
    print("| t s | requests/s served | desired | ready | of which buffer | wanted ceil(rps/300) |")
    print("|---|---|---|---|---|---|")
    for s in samples[::max(1, round(5 / 0.25))]:
        print(f"| {s[0]:.1f} | {s[1]:.0f} | {s[2]} | {s[3]} | {s[4]} | {max(1, math.ceil(s[1] / TARGET_RPS))} |")
    if args.plot:
        plot(args, samples)
    return samples, len(failed)


def plot(args, samples):
    data = os.path.join(tempfile.gettempdir(), f"berth-autoscale-{os.getpid()}.json")
    with open(data, "w") as f:
        json.dump({"samples": samples, "target": TARGET_RPS, "title":
                   f"berth autoscale ramp: {args.low} → {args.peak} → {args.low} req/s through the gateway, "
                   f"target {TARGET_RPS} req/s per replica"}, f)
    script = r"""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
d = json.load(open(sys.argv[1]))
t = [s[0] for s in d["samples"]]
fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
ax.plot(t, [s[1] for s in d["samples"]], color="tab:blue", lw=1, label="requests/s served (250 ms)")
ax.set_xlabel("seconds"); ax.set_ylabel("requests/s", color="tab:blue")
ax2 = ax.twinx()
ax2.step(t, [s[3] for s in d["samples"]], where="post", color="tab:red", lw=2.5, label="ready replicas (endpoint table)")
ax2.step(t, [s[2] for s in d["samples"]], where="post", color="black", lw=1, ls="--", label="desired replicas (controller)")
ax2.step(t, [s[4] for s in d["samples"]], where="post", color="tab:green", lw=1.5, label="of which on buffer bases")
# One replica's height on the right is its target on the left: where the
# rate is above the red line, the replicas carry more than the target.
top = max(max(s[1] for s in d["samples"]), (max(s[2] for s in d["samples"]) + 1) * d["target"]) * 1.05
ax.set_ylim(0, top); ax2.set_ylim(0, top / d["target"])
ax2.set_ylabel("replicas (1 replica = %d req/s on the left)" % d["target"])
lines = ax.get_legend_handles_labels(); lines2 = ax2.get_legend_handles_labels()
ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
ax.set_title(d["title"], fontsize=9); ax.grid(alpha=0.3)
fig.tight_layout(); fig.savefig(sys.argv[2])
"""
    subprocess.run([venv_python(), "-c", script, data, args.plot], check=True)
    os.remove(data)
    bench.log(f"plot written to {args.plot}")


def settle(fleet, low, at_least=2.0):
    """Low load until the deployment is back at one ready replica (and desired 1)."""
    started = time.time()
    while True:
        run = Hey(fleet.url(), low, 2)
        run.join()
        if time.time() - started >= at_least and fleet.desired() == 1 and fleet.ready() == 1:
            return run
        if time.time() - started > 120:
            raise RuntimeError("the deployment did not come back to one replica within 120 s")


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))]


def steps(args, fleet, rate, count, what):
    """Steps from args.low to `rate`, `count` times. Per step, seconds from
    the step to: the first Autoscaled event; the last one of the step (the
    count the rate actually served wants: the machine may not carry all of
    `rate`); that count ready and not draining in the endpoint table; and
    from the decision that asked for more than the group holds to a buffer
    base's replica ready."""
    results = []
    failed = []
    for i in range(count):
        failed += settle(fleet, args.low).failed
        ok_before = sum(fleet.served())
        t0 = time.time()
        high = Hey(fleet.url(), rate, args.step_seconds)
        timeline = []  # (t, desired, ready)
        buffered = None
        while high.thread.is_alive():
            replicas = [r for r in fleet.endpoints() if r["ready"] and not r["draining"]]
            now = time.time()
            timeline.append((now - t0, fleet.desired(), len(replicas)))
            if buffered is None and any(r.get("labels", {}).get(BUFFER_LABEL) == "buffer" for r in replicas):
                buffered = now
            time.sleep(0.02)
        served = (sum(fleet.served()) - ok_before) / (time.time() - t0)
        events = fleet.autoscaled_since(int(t0 * 1000))
        high.join()
        failed += high.failed
        ups = [(at / 1000 - t0, int(re.search(r"(\d+) → (\d+)", m).group(2)), m) for at, m in events
               if int(re.search(r"(\d+) → (\d+)", m).group(2)) > int(re.search(r"(\d+) → (\d+)", m).group(1))]
        want = max((to for _, to, _ in ups), default=None)
        decided = ups[0][0] if ups else None
        final = next((at for at, to, _ in ups if to == want), None)
        enough = next((t for t, d, r in timeline if want is not None and r >= want), None)
        # The decision that asked for more than the group's own bases hold.
        over = next((at + t0 for at, to, _ in ups if to > GROUP_BASES), None)
        to_buffer = buffered - over if buffered is not None and over is not None else None
        results.append({"decided": decided, "final": final, "enough": enough, "buffer": to_buffer,
                        "want": want, "served": served, "decisions": [m for _, _, m in ups]})
        bench.log(f"{what} {i + 1}/{count}: {served:.0f}/s served over the step; first decision {decided}, "
                  f"last ({want}) {final}, {want} ready {enough}, buffer after decision {to_buffer}; "
                  f"{[m.split('(')[0] + m.split(':')[-1] for _, _, m in ups]}")
    return results, failed


def fmt(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-", "-", "-"
    return f"{percentile(values, 50):.2f}", f"{percentile(values, 99):.2f}", f"{max(values):.2f}"


def step(args, fleet):
    results, failed = steps(args, fleet, args.step_rate, args.steps, "step")
    served = [r["served"] for r in results]
    wants = sorted({r["want"] for r in results if r["want"]})
    print(f"\n### Step {args.low} → {args.step_rate} requests/s, {args.steps} times "
          f"(target {TARGET_RPS}/s per replica; target: enough replicas ready ≤ 2 s)\n")
    print(f"served over the {args.step_seconds} s steps: {bench.fmt_range(served)} requests/s; "
          f"replicas decided for it: {wants}\n")
    print("| from the step to | p50 s | p99 s | max s | missed |")
    print("|---|---|---|---|---|")
    for key, label in (("decided", "the first Autoscaled event (scale-up)"),
                       ("final", "the last one (the count the served rate wants)"),
                       ("enough", "that count ready (endpoint table)")):
        missed = sum(1 for r in results if r[key] is None)
        print(f"| {label} | " + " | ".join(fmt([r[key] for r in results])) + f" | {missed} |")
    print(f"\nfailed requests during the steps: {len(failed)} {failed[:5] if failed else ''}")
    return results, failed


def buffer(args, fleet):
    # A lower target, so the rate this machine carries wants more replicas
    # than the group's bases (the measure is decision → serving, not rate).
    fleet.apply(args.buffer_target)
    try:
        results, failed = steps(args, fleet, args.buffer_rate, args.buffer_steps, "buffer")
    finally:
        fleet.apply(TARGET_RPS)
    want = sorted({r["want"] for r in results if r["want"]})
    print(f"\n### Buffer: step {args.low} → {args.buffer_rate} requests/s at target {args.buffer_target}/s "
          f"per replica, {args.buffer_steps} times (wants {want}: more than the group's {GROUP_BASES} bases)\n")
    print("| measure | p50 s | p99 s | max s | missed |")
    print("|---|---|---|---|---|")
    missed = sum(1 for r in results if r["buffer"] is None)
    print("| Autoscaled event → a buffer base's replica ready | " + " | ".join(fmt([r["buffer"] for r in results]))
          + f" | {missed} |")
    missed = sum(1 for r in results if r["enough"] is None)
    print("| step → the count decided ready | " + " | ".join(fmt([r["enough"] for r in results]))
          + f" | {missed} |")
    print(f"\nfailed requests during the buffer steps: {len(failed)} {failed[:5] if failed else ''}")
    return results, failed


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--berth", default=os.path.join(bench.RELEASE, "berth"))
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--only", choices=["ramp", "step", "buffer"])
    p.add_argument("--low", type=int, default=50)
    p.add_argument("--peak", type=int, default=2000)
    p.add_argument("--ramp-seconds", type=int, default=60)
    p.add_argument("--segment", type=int, default=2, help="seconds per hey run of the ramp")
    p.add_argument("--tail", type=int, default=10, help="seconds at --low after the ramp")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--step-rate", type=int, default=1500)
    p.add_argument("--step-seconds", type=int, default=5)
    p.add_argument("--buffer-steps", type=int, default=5)
    p.add_argument("--buffer-rate", type=int, default=2000)
    p.add_argument("--buffer-target", type=int, default=150,
                   help="requests/s per replica during the buffer steps")
    p.add_argument("--down-window", default="3s", help="scaleDownWindow of the deployment")
    p.add_argument("--up-window", default="2s", help="scaleUpWindow of the deployment")
    p.add_argument("--load-report-interval", default=None,
                   help="the gateway's --load-report-interval (default: the gateway's own, 250ms)")
    p.add_argument("--plot", default=os.path.join(bench.ROOT, "bench", "autoscale.png"))
    args = p.parse_args()
    ensure_hey()
    if not args.skip_build:
        bench.build()
    if args.plot and args.only in (None, "ramp"):
        venv_python()
    tmp = tempfile.mkdtemp(prefix="berth-autoscale-")
    fleet = Fleet(args.berth, tmp, args.down_window, args.up_window, args.load_report_interval)
    try:
        print(f"berth: {args.berth}; {GROUP_BASES} group bases + {BUFFER_BASES} buffer bases, "
              f"scaleUpWindow {args.up_window}, scaleDownWindow {args.down_window}, "
              f"gateway load reports every {args.load_report_interval or '250ms (default)'}, {os.cpu_count()} cores")
        if args.only in (None, "ramp"):
            ramp(args, fleet)
        if args.only in (None, "step"):
            step(args, fleet)
        if args.only in (None, "buffer"):
            buffer(args, fleet)
    finally:
        fleet.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
