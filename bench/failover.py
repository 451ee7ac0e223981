#!/usr/bin/env python3
"""berth's high-availability benchmark: controller failover on etcd.

Starts a 3-member etcd cluster on loopback (Debian's `etcd-server`, installed
with apt-get when missing), 3 release `berth controller --store etcd://...`
processes (leader TTL --ttl, default 2 s) and 3 bases that list all three
controllers. Then, --kills times (default 20): find the leader (`GET
/v1/leader`), SIGKILL it, and time
  - until a survivor says it leads, and
  - until a write through the controller list is answered by the new leader
    (an apply that changes the replica count: answered only after the new
    leader's reconcile pass ran), and the bases serve that many replicas;
then start the killed controller again on its port as a follower. Reports
p50 / p99 / max of both times (target: new leader reconciling within TTL +
1 s).

Second table, in the same run: `berth apply` -> N replicas serving (N =
--bases, default 20) with one controller on redb and with one on the etcd
cluster, interleaved over --rounds, so the cost of etcd shows against the
embedded store on the same machine.

Usage: bench/failover.py [--kills 20] [--ttl 2] [--bases 20] [--rounds 3] [--skip-build]
       bench/failover.py --berth target/debug/berth --kills 2 --bases 3 --rounds 1   (a smoke run)
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from importlib import util as _util

_spec = _util.spec_from_file_location("berth_throughput", os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.py"))
bench = _util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

BERTH = os.path.join(bench.RELEASE, "berth")


def ensure_etcd():
    if shutil.which("etcd") is None:
        bench.log("installing etcd-server with apt-get")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "etcd-server"], check=True)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Etcd:
    """A 3-member etcd cluster on loopback, its data in `tmp`."""

    def __init__(self, tmp, n=3):
        # etcd cannot announce a port it picked: these are probed free just
        # before it binds them (a clash fails loudly, it is never raced silently).
        self.members = [(f"m{i}", free_port(), free_port()) for i in range(n)]
        initial = ",".join(f"{name}=http://127.0.0.1:{peer}" for name, _, peer in self.members)
        self.procs = []
        token = f"bench-{self.members[0][1]}"
        for name, client, peer in self.members:
            self.procs.append(bench.start([
                "etcd", "--name", name, "--data-dir", os.path.join(tmp, f"etcd-{name}-{client}"),
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", initial, "--initial-cluster-token", token]))
        for _, client, _ in self.members:
            bench.wait_until(lambda c=client: b'"health":"true"' in bench.http("GET", f"http://127.0.0.1:{c}/health", timeout=1)[1],
                             timeout=30, what="etcd member")

    def store(self):
        return "etcd://" + ",".join(f"127.0.0.1:{client}" for _, client, _ in self.members)

    def stop(self):
        for proc, (_, client, peer) in zip(self.procs, self.members):
            bench.stop(proc, [client, peer])


def start_controller(tmp, store, ttl, port=0):
    proc, (port,) = bench.start_announced(
        [BERTH, "controller", "--listen", f"127.0.0.1:{port}", "--data-dir", tempfile.mkdtemp(dir=tmp),
         "--store", store, "--leader-ttl", f"{ttl}s",
         # Every other kill scales 3 -> 2: without this, the removed replica
         # serves on through the drain grace (2 s by default) and the run
         # would time the drain, not the new leader (bench/gateway.py
         # measures draining).
         "--drain-grace", "0s"],
        [r"berth controller serving on http://[\d.]+:(\d+)"])
    return proc, port


def leads(port):
    status, body = bench.http("GET", f"http://127.0.0.1:{port}/v1/leader", timeout=1)
    return status == 200 and json.loads(body).get("leader") is True


def start_bases(tmp, n, controllers, prefix):
    listing = ",".join(f"127.0.0.1:{p}" for p in controllers)
    return [bench.Berth(tempfile.mkdtemp(dir=tmp), ["--controller", listing, "--name", f"{prefix}{i}",
                                                   "--labels", "group=bench", "--heartbeat-interval", "100ms"])
            for i in range(n)]


def ready_bases(controllers):
    for port in controllers:
        status, body = bench.http("GET", f"http://127.0.0.1:{port}/v1/bases", timeout=2)
        if status == 200:
            return {b["heartbeat"]["name"] for b in json.loads(body) if b.get("state") == "Ready"}
    return set()


def apply(tmp, controllers, name, wasm_path, replicas):
    import hashlib
    digest = "sha256:" + hashlib.sha256(open(wasm_path, "rb").read()).hexdigest()
    path = os.path.join(tmp, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(f"apiVersion: berth.dev/v1\nkind: ModuleDeployment\nmetadata: {{ name: {name} }}\nspec:\n"
                f"  module: {{ name: {name}, version: 1.0.0, artifact: \"file:{wasm_path}\", digest: \"{digest}\" }}\n"
                f"  replicas: {replicas}\n  baseSelector: {{ group: bench }}\n")
    listing = ",".join(f"127.0.0.1:{p}" for p in controllers)
    return subprocess.run([BERTH, "apply", "-f", path, "--controller", listing],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def serving(bases, route):
    return sum(1 for b in bases if bench.http("GET", f"http://127.0.0.1:{b.port}{route}", timeout=1)[0] == 200)


def failovers(tmp, kills, ttl):
    etcd = Etcd(tmp)
    ctls = [start_controller(tmp, etcd.store(), ttl) for _ in range(3)]
    ports = [p for _, p in ctls]
    bases = start_bases(tmp, 3, ports, "ha-")
    elected, reconciled = [], []
    try:
        bench.wait_until(lambda: ready_bases(ports) >= {f"ha-{i}" for i in range(3)}, timeout=60, what="bases Ready")
        replicas = 2
        assert apply(tmp, ports, "hello", bench.HELLO_WASM, replicas)
        bench.wait_until(lambda: serving(bases, "/hello") == replicas, timeout=60, what="hello serving")
        for k in range(kills):
            bench.wait_until(lambda: sum(leads(p) for p in ports) == 1, timeout=30, what="one leader")
            i = next(i for i, p in enumerate(ports) if leads(p))
            proc = ctls[i][0]
            os.killpg(proc.pid, signal.SIGKILL)
            killed = time.perf_counter()
            proc.wait()
            others = [p for j, p in enumerate(ports) if j != i]
            bench.wait_until(lambda: any(leads(p) for p in others), timeout=30, what="a new leader")
            elected.append(time.perf_counter() - killed)
            replicas = 3 if replicas == 2 else 2
            bench.wait_until(lambda: apply(tmp, others, "hello", bench.HELLO_WASM, replicas), timeout=30,
                             what="an apply answered")
            bench.wait_until(lambda: serving(bases, "/hello") == replicas, timeout=30, what="the new replica count")
            reconciled.append(time.perf_counter() - killed)
            bench.log(f"kill {k + 1}: leader after {elected[-1] * 1e3:.0f} ms, reconciled after {reconciled[-1] * 1e3:.0f} ms")
            ctls[i] = start_controller(tmp, etcd.store(), ttl, port=ports[i])
    finally:
        for b in bases:
            b.stop()
        for proc, port in ctls:
            bench.stop(proc, [port])
        etcd.stop()
    return elected, reconciled


def apply_to_serving(tmp, store_kind, n):
    etcd = Etcd(tmp) if store_kind == "etcd" else None
    store = etcd.store() if etcd else f"redb:{os.path.join(tempfile.mkdtemp(dir=tmp), 'c.redb')}"
    proc, port = start_controller(tmp, store, 2)
    prefix = f"{store_kind}-{time.monotonic_ns()}-"
    bases = start_bases(tmp, n, [port], prefix)
    try:
        bench.wait_until(lambda: leads(port), timeout=30, what="the controller leading")
        bench.wait_until(lambda: ready_bases([port]) >= {f"{prefix}{i}" for i in range(n)}, timeout=60, what="bases Ready")
        started = time.perf_counter()
        assert apply(tmp, [port], "hello", bench.HELLO_WASM, n)
        bench.wait_until(lambda: serving(bases, "/hello") == n, timeout=120, what="every replica")
        return time.perf_counter() - started
    finally:
        for b in bases:
            b.stop()
        bench.stop(proc, [port])
        if etcd:
            etcd.stop()


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--ttl", type=int, default=2, help="leader lease TTL, whole seconds (etcd's minimum is 2)")
    ap.add_argument("--bases", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="runs of apply -> serving per store, interleaved")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--berth", help="a berth binary to use instead of building the release one "
                                    "(e.g. target/debug/berth for a smoke run; its figures mean nothing)")
    args = ap.parse_args()
    ensure_etcd()
    global BERTH
    if args.berth:
        BERTH = os.path.abspath(args.berth)
        bench.RELEASE = os.path.dirname(BERTH)
    elif not args.skip_build:
        bench.build()
    tmp = tempfile.mkdtemp(prefix="berth-failover-bench-")
    try:
        elected, reconciled = failovers(tmp, args.kills, args.ttl)
        spans = {"redb": [], "etcd": []}
        for _ in range(args.rounds):
            for kind in ("redb", "etcd"):
                spans[kind].append(apply_to_serving(tmp, kind, args.bases))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def row(what, values):
        ms = [v * 1e3 for v in values]
        return f"| {what} | {pct(ms, 50):.0f} ms | {pct(ms, 99):.0f} ms | {max(ms):.0f} ms |"

    print(f"\n## Controller failover on a 3-member etcd ({os.cpu_count()} cores, leader TTL {args.ttl} s, {args.kills} SIGKILLs of the leader)\n")
    print("| from the kill until | p50 | p99 | max |")
    print("|---|---|---|---|")
    print(row("a survivor leads", elected))
    print(row("an apply through the list is reconciled and served", reconciled))
    print(f"\ntarget: reconciled within TTL + 1 s = {args.ttl + 1} s\n")
    print(f"## `berth apply` -> {args.bases} replicas serving: redb vs etcd ({args.rounds} runs each, interleaved)\n")
    print("| store | median | min-max |")
    print("|---|---|---|")
    for kind in ("redb", "etcd"):
        ms = sorted(v * 1e3 for v in spans[kind])
        print(f"| {kind} | **{ms[len(ms) // 2]:.0f} ms** | {ms[0]:.0f}–{ms[-1]:.0f} ms |")
    ratio = sorted(spans["etcd"])[len(spans["etcd"]) // 2] / sorted(spans["redb"])[len(spans["redb"]) // 2]
    print(f"\netcd / redb: {ratio:.2f}x")


if __name__ == "__main__":
    main()
