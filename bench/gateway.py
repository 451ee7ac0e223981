#!/usr/bin/env python3
"""berth's gateway benchmark: the fleet gateway vs HAProxy vs no proxy.

Starts a release `berth controller`, two bases and `berth gateway` on this
machine, deploys `hello` with one replica per base, and drives the same wrk
load (same connections, threads, duration) at, interleaved over rounds:

- **direct**: one base's ingress, no proxy;
- **gateway**: `berth gateway` (rules, least outstanding of two), twice:
  speaking HTTP/2 to the bases (its default: one connection per thread
  and base, requests multiplexed on it) and HTTP/1.1 (`--base-protocol
  http1`: pooled keep-alive connections);
- **haproxy**: HAProxy (Debian package, installed with apt-get when
  missing) as a round-robin HTTP reverse proxy to the same two bases, a
  fair peer: keep-alive to the bases with connections reused across client
  connections (`http-reuse always`), no logging, and as many threads
  (`nbthread`) as the gateway has runtime workers (`--proxy-threads`, given
  to the gateway as TOKIO_WORKER_THREADS); also twice, speaking HTTP/1.1
  to the bases and HTTP/2 (`proto h2` on its server lines), so each
  gateway has a peer speaking its protocol;
- **hyper floor**: `hyper-proxy` (bench/src/hyper_proxy.rs), the
  gateway's layout and libraries (listener threads, hyper's HTTP/1.1
  server, one hyper HTTP/2 connection per thread and base) doing nothing
  but round-robin forwarding. The gateway's cost above it is berth's own
  per-request work; its cost above HAProxy is hyper's and tokio's.

Reports requests/s, p50 and p99 (median and min-max over rounds), the
proxy's own CPU time per request (user + system time of the gateway or
HAProxy process over the run, from /proc, divided by the requests wrk
counted: less sensitive to other load on a shared machine than
requests/s), and the gateway/HAProxy ratios (target: requests/s >= 1.0x
HAProxy, p99 no worse): the gateway as shipped against HAProxy in its
usual HTTP/1.1, against HAProxy in HTTP/2, and HTTP/1.1 against HTTP/1.1;
then the hyper floor against HAProxy in HTTP/2 and the gateway against
the floor.

Then counts failed requests (non-2xx and socket errors, as wrk reports
them) through the gateway under load while (a) the deployment scales in
from 4 replicas to 1 (drain; target 0), (b) one of 3 bases is killed
with SIGKILL (target: only requests in flight on it) and (c) 3 replicas
roll out to another version in 3 batches (target 0).

Then measures activation from zero (target p50 <= 20 ms, p99 <= 100 ms):
`hello` with `scaleToZero: {idleAfter: 1s}` behind the gateway, N times:
wait until the controller scaled it to 0 replicas and the base dropped it,
then time one request through the gateway from send to its 200 (client
clock), and read the gateway's own `x-berth-cold-start-ms` (how long the
request was held). Each round costs about idleAfter + a tick, so 50
activations take a couple of minutes.

Usage: bench/gateway.py [--rounds 3] [--duration 10] [--connections 32] [--threads 2]
                        [--proxy-threads 2] [--activations 50]
                        [--only throughput|failures|activation]
                        [--skip-build] [--berth target/release/berth]
A debug build works for a smoke run: --berth target/debug/berth --skip-build.
"""

import argparse
import http.client
import json
import os
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

BERTH = os.path.join(bench.RELEASE, "berth")
HELLO_V2 = os.path.join(bench.ROOT, "target", "wasm-modules", "hello-v2", "wasm32-wasip2", "release", "hello.wasm")
SECRET = "bench-secret"


def ensure_haproxy():
    if shutil.which("haproxy") is None:
        bench.log("installing haproxy with apt-get")
        # apt's chatter goes to stderr: stdout is the report.
        subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "haproxy"], check=True, stdout=sys.stderr)


def start_controller(tmp, extra=()):
    proc, (port,) = bench.start_announced(
        [BERTH, "controller", "--listen", "127.0.0.1:0", "--heartbeat-timeout", "1s",
         "--data-dir", tempfile.mkdtemp(dir=tmp), *extra],
        [r"berth controller serving on http://[\d.]+:(\d+)"])
    return proc, port


def start_base(tmp, controller, name):
    proc, (port, ops) = bench.start_announced(
        [BERTH, "base", "--listen", "127.0.0.1:0", "--ops", "127.0.0.1:0",
         "--data-dir", tempfile.mkdtemp(dir=tmp), "--controller", f"http://127.0.0.1:{controller}",
         "--name", name, "--labels", "group=bench", "--heartbeat-interval", "200ms",
         "--gateway-secret", SECRET],
        bench.BERTH_ANNOUNCES)
    return {"proc": proc, "port": port, "ops": ops}


def start_gateway(controller, threads=None, listener_threads=None, base_protocol="http2"):
    """`berth gateway`; `threads`: its runtime's worker threads (default: one per core);
    `listener_threads`: its `--threads` (None: its default, one per core; 0: connections
    served on that runtime); `base_protocol`: its `--base-protocol`."""
    # `env` execs berth in its own place: the process is still the gateway.
    workers = ["env", f"TOKIO_WORKER_THREADS={threads}"] if threads else []
    proc, (port,) = bench.start_announced(
        [*workers, BERTH, "gateway", "--listen", "127.0.0.1:0", "--controller", f"http://127.0.0.1:{controller}",
         "--gateway-secret", SECRET, "--base-protocol", base_protocol,
         *(["--threads", str(listener_threads)] if listener_threads is not None else [])],
        [r"berth gateway serving on http://[\d.]+:(\d+)"])
    return proc, port


def start_floor(base_ports):
    """`hyper-proxy` (the gateway's floor) forwarding round-robin to `base_ports`."""
    proc, (port,) = bench.start_announced(
        [os.path.join(os.path.dirname(BERTH), "hyper-proxy"), "127.0.0.1:0",
         *(f"127.0.0.1:{p}" for p in base_ports)],
        [r"hyper-proxy serving on http://[\d.]+:(\d+)"], stream="stderr")
    return proc, port


def cpu_seconds(pid):
    """User + system CPU time of process `pid` (all its threads) so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def apply(tmp, controller, replicas, extra="", version="1.0.0", artifact=None):
    artifact = artifact or bench.HELLO_WASM
    digest = "sha256:" + __import__("hashlib").sha256(open(artifact, "rb").read()).hexdigest()
    path = os.path.join(tmp, "hello.yaml")
    with open(path, "w") as f:
        f.write("apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: { name: hello }\nspec:\n"
                f"  module: {{ name: hello, version: {version}, artifact: \"file:{artifact}\", digest: \"{digest}\" }}\n"
                f"  replicas: {replicas}\n  baseSelector: {{ group: bench }}\n{extra}")
    subprocess.run([BERTH, "apply", "-f", path, "--controller", f"127.0.0.1:{controller}"], check=True,
                   stdout=subprocess.DEVNULL)


def serving(port, n=20):
    return all(bench.http("GET", f"http://127.0.0.1:{port}/hello", timeout=2)[0] == 200 for _ in range(n))


def start_haproxy(tmp, base_ports, threads, h2=False):
    """HAProxy round-robin to the bases, in HTTP/1.1 or (`h2`) cleartext HTTP/2."""
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # One file per instance: the HTTP/1.1 and HTTP/2 peers run side by side.
    cfg = os.path.join(tmp, f"haproxy-{port}.cfg")
    proto = " proto h2" if h2 else ""
    servers = "\n".join(f"    server b{i} 127.0.0.1:{p}{proto}" for i, p in enumerate(base_ports))
    # A fair peer: as many threads as the gateway's workers, no logging
    # (no `log` line anywhere), keep-alive on both sides and server
    # connections shared by all client connections, like the gateway's pool.
    nbthread = f"\n    nbthread {threads}" if threads else ""
    with open(cfg, "w") as f:
        f.write(f"""global
    maxconn 4096{nbthread}
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    balance roundrobin
    http-reuse always
{servers}
""")
    proc = bench.start(["haproxy", "-db", "-f", cfg])
    bench.wait_until(lambda: bench.port_open(port), what="haproxy")
    return proc, port


def throughput(args, tmp):
    ctl, ctl_port = start_controller(tmp)
    bases = [start_base(tmp, ctl_port, f"t{i}") for i in range(2)]
    gw, gw_port = start_gateway(ctl_port, args.proxy_threads, args.listener_threads)
    gw1, gw1_port = start_gateway(ctl_port, args.proxy_threads, args.listener_threads, "http1")
    apply(tmp, ctl_port, 2)
    bench.wait_until(lambda: serving(gw_port) and serving(gw1_port) and all(serving(b["port"], 1) for b in bases),
                     what="gateway")
    ports = [b["port"] for b in bases]
    ha, ha_port = start_haproxy(tmp, ports, args.proxy_threads)
    ha2, ha2_port = start_haproxy(tmp, ports, args.proxy_threads, h2=True)
    bench.wait_until(lambda: serving(ha2_port), what="haproxy speaking HTTP/2 to the bases")
    floor, floor_port = start_floor(ports)
    bench.wait_until(lambda: serving(floor_port), what="hyper-proxy")
    # Each target with the process whose CPU time per request is measured.
    # The first of each pair speaks HTTP/2 to the bases, the second HTTP/1.1.
    targets = {"direct": (bases[0]["port"], bases[0]["proc"].pid),
               "gateway (h2 to bases)": (gw_port, gw.pid), "gateway (http1 to bases)": (gw1_port, gw1.pid),
               "haproxy (h2 to bases)": (ha2_port, ha2.pid), "haproxy (http1 to bases)": (ha_port, ha.pid),
               "hyper floor (h2 to bases)": (floor_port, floor.pid)}
    results = {k: [] for k in targets}
    try:
        for r in range(args.rounds):
            for name, (port, pid) in targets.items():
                bench.log(f"round {r + 1}/{args.rounds}: {name}")
                cpu = cpu_seconds(pid)
                run = bench.run_wrk(f"http://127.0.0.1:{port}/hello", args.duration, args.connections,
                                    args.threads)
                run["cpu_us"] = (cpu_seconds(pid) - cpu) * 1e6 / max(run["requests"], 1)
                results[name].append(run)
    finally:
        bench.stop(ha, [ha_port])
        bench.stop(ha2, [ha2_port])
        bench.stop(floor, [floor_port])
        bench.stop(gw, [gw_port])
        bench.stop(gw1, [gw1_port])
        for b in bases:
            bench.stop(b["proc"], [b["port"], b["ops"]])
        bench.stop(ctl, [ctl_port])
    print(f"\n### Gateway overhead ({args.connections} connections, {args.threads} wrk threads, "
          f"{args.duration} s x {args.rounds} rounds, 2 bases, proxies with "
          f"{args.proxy_threads or os.cpu_count()} threads, gateway --threads {'default' if args.listener_threads is None else args.listener_threads})\n")
    print("| target | requests/s | p50 ms | p99 ms | CPU µs/request (the proxy; direct: the base) | errors |")
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        print(f"| {name} | {bench.fmt_range([x['rps'] for x in runs])} | "
              f"{bench.fmt_range([x['p50'] for x in runs], '{:.2f}')} | "
              f"{bench.fmt_range([x['p99'] for x in runs], '{:.2f}')} | "
              f"{bench.fmt_range([x['cpu_us'] for x in runs], '{:.1f}')} | {sum(x['errors'] for x in runs)} |")
    print()
    for gateway, haproxy in [("gateway (h2 to bases)", "haproxy (http1 to bases)"),
                             ("gateway (h2 to bases)", "haproxy (h2 to bases)"),
                             ("gateway (http1 to bases)", "haproxy (http1 to bases)"),
                             ("hyper floor (h2 to bases)", "haproxy (h2 to bases)"),
                             ("gateway (h2 to bases)", "hyper floor (h2 to bases)")]:
        g, h = results[gateway], results[haproxy]
        ratios = [a["rps"] / b["rps"] for a, b in zip(g, h)]
        p99s = [a["p99"] / b["p99"] for a, b in zip(g, h)]
        cpus = [a["cpu_us"] / b["cpu_us"] for a, b in zip(g, h)]
        # #13's targets are the gateway's against HAProxy; the floor's lines
        # say where the gap is.
        is_target = gateway.startswith("gateway") and haproxy.startswith("haproxy")
        print(f"{gateway} / {haproxy}: requests/s {bench.fmt_range(ratios, '{:.2f}')}x"
              f"{' (target >= 1.0)' if is_target else ''}; "
              f"p99 {bench.fmt_range(p99s, '{:.2f}')}x{' (target <= 1.0)' if is_target else ''}; "
              f"CPU per request {bench.fmt_range(cpus, '{:.2f}')}x")


def failures_during(args, tmp, n_bases, replicas, action, what):
    """Failed requests through the gateway during `action`, run a third of the way into a wrk load."""
    ctl, ctl_port = start_controller(tmp)
    bases = [start_base(tmp, ctl_port, f"f{i}") for i in range(n_bases)]
    gw, gw_port = start_gateway(ctl_port)
    apply(tmp, ctl_port, replicas)
    bench.wait_until(lambda: serving(gw_port) and sum(serving(b["port"], 1) for b in bases) == replicas,
                     what="gateway")
    result = {}

    def load():
        result.update(bench.run_wrk(f"http://127.0.0.1:{gw_port}/hello", args.duration,
                                    args.connections, args.threads))

    t = threading.Thread(target=load)
    t.start()
    time.sleep(args.duration / 3)
    action(ctl_port, bases)
    t.join()
    alive = [b for b in bases if b["proc"].poll() is None]
    for b in alive:
        bench.stop(b["proc"], [b["port"], b["ops"]])
    bench.stop(gw, [gw_port])
    bench.stop(ctl, [ctl_port])
    print(f"| {what} | {result['requests']} | {result['errors']} |")


def failures(args, tmp):
    """Failed requests through the gateway during a scale-in, a base kill and a rollout."""
    print(f"\n### Failed requests through the gateway under load ({args.duration} s of wrk, "
          f"the change {args.duration / 3:.1f} s in)\n")
    print("| event | requests | failed |")
    print("|---|---|---|")
    failures_during(args, tmp, 4, 4, lambda ctl, bases: apply(tmp, ctl, 1),
                    "scale-in 4 -> 1 (drain; target 0)")
    failures_during(args, tmp, 3, 3, lambda ctl, bases: bases[0]["proc"].kill(),
                    "SIGKILL of 1 of 3 bases (target: in flight only)")
    failures_during(args, tmp, 3, 3,
                    lambda ctl, bases: apply(tmp, ctl, 3, "  strategy: { batches: 3 }\n", "2.0.0", HELLO_V2),
                    "rollout 1.0.0 -> 2.0.0 in 3 batches (target 0)")


def percentile(values, p):
    """Nearest-rank percentile `p` (0-100) of `values`."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def scaled_to_zero(ctl_port, base_port):
    status, body = bench.http("GET", f"http://127.0.0.1:{ctl_port}/v1/deployments/hello", timeout=2)
    if status != 200 or not json.loads(body).get("status", {}).get("scaledToZero"):
        return False
    # Drained and uninstalled: the base itself no longer serves it.
    return bench.http("GET", f"http://127.0.0.1:{base_port}/hello", timeout=2)[0] == 404


def activation(args, tmp):
    """Activation from zero through the gateway, `args.activations` times."""
    ctl, ctl_port = start_controller(tmp, ["--drain-grace", "100ms"])
    base = start_base(tmp, ctl_port, "z0")
    gw, gw_port = start_gateway(ctl_port)
    apply(tmp, ctl_port, 1, "  scaleToZero: { idleAfter: 1s }\n")
    client_ms, held_ms, failed = [], [], 0
    try:
        bench.wait_until(lambda: serving(gw_port, 1), what="gateway")
        for i in range(args.activations):
            bench.wait_until(lambda: scaled_to_zero(ctl_port, base["port"]), timeout=30,
                             what=f"scale to zero {i + 1}")
            conn = http.client.HTTPConnection("127.0.0.1", gw_port, timeout=30)
            started = time.perf_counter()
            conn.request("GET", "/hello")
            response = response_body = None
            try:
                response = conn.getresponse()
                response_body = response.read()
            finally:
                elapsed = (time.perf_counter() - started) * 1000
                conn.close()
            if response is None or response.status != 200:
                failed += 1
                bench.log(f"activation {i + 1}: {response and response.status} {response_body!r}")
                continue
            client_ms.append(elapsed)
            header = response.getheader("x-berth-cold-start-ms")
            if header is not None:
                held_ms.append(float(header))
            bench.log(f"activation {i + 1}/{args.activations}: {elapsed:.1f} ms (held {header} ms)")
    finally:
        bench.stop(gw, [gw_port])
        bench.stop(base["proc"], [base["port"], base["ops"]])
        bench.stop(ctl, [ctl_port])
    print(f"\n### Activation from zero through the gateway ({args.activations} activations, 1 base)\n")
    print("| measure | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    for name, values in (("request, client clock", client_ms), ("held (x-berth-cold-start-ms)", held_ms)):
        if values:
            print(f"| {name} | {percentile(values, 50):.1f} | {percentile(values, 99):.1f} | {max(values):.1f} |")
    print(f"\nfailed activations: {failed}; without the cold-start header: {len(client_ms) - len(held_ms)} "
          "(target p50 <= 20 ms, p99 <= 100 ms)")


def main():
    global BERTH
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--proxy-threads", type=int, default=2,
                    help="the gateway's runtime workers and HAProxy's nbthread (0: the gateway's default, "
                         "one per core, and HAProxy's, one per core)")
    ap.add_argument("--listener-threads", type=int, default=None,
                    help="the gateway's --threads (listener threads, each with its own runtime and "
                         "connections; default: the gateway's, one per core; 0: connections served on "
                         "its work-stealing runtime)")
    ap.add_argument("--activations", type=int, default=50, help="activations from zero to time")
    ap.add_argument("--only", choices=["throughput", "failures", "activation"], help="run one part")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--berth", help="the berth binary [default: target/release/berth]")
    args = ap.parse_args()
    bench.ensure_tools(wasmtime=False)
    if args.only in (None, "throughput"):
        ensure_haproxy()
    if args.berth:
        BERTH = os.path.abspath(args.berth)
    if not args.skip_build:
        bench.build()
    tmp = tempfile.mkdtemp(prefix="berth-gateway-bench-")
    try:
        if args.only in (None, "throughput"):
            throughput(args, tmp)
        if args.only in (None, "failures"):
            failures(args, tmp)
        if args.only in (None, "activation"):
            activation(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
