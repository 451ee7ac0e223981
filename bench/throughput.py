#!/usr/bin/env python3
"""berth's HTTP benchmark: berth vs `wasmtime serve` vs a native hyper server.

Runs the same component in a berth base and in `wasmtime serve` 48, plus
`native-hello` (hyper, no wasm), one at a time on
fresh ports, each driven by wrk with the same connections and duration.
Configurations are interleaved over several rounds (runs on this kind of
machine vary by up to ~1.8x), and each server is killed with SIGKILL and
waited for before the next starts. Then it measures berth's module install
time (cold compile vs warm from the compile cache) and how long a base with
10 installed modules takes from process start to serving all of them again.

Components (`--modules`): `hello` (modules/hello) and `wasi-proxy`, the
`wasip2` crate's own `http-proxy` example (a third-party component, 112 KB,
built here from the crate's published source for wasm32-wasip2), and the
heavy ones, `python` and `js`: the hello components of `berth new --lang
python|js` built with `berth build` (componentize-py / componentize-js at the
versions berth pins, installed on first use; ~18 MB and ~13 MB). Heavy
components are measured on Cranelift code (berth's rows wait for the
optimized tier to take over, and reuse its compiled code across rounds;
`wasmtime serve` uses its own compile cache), plus one row on berth's
Winch tier (`--tiers winch`). What "kept resident" means is sized per
component: 4 MiB for the small ones, 64 MiB for the heavy ones (what their
instances write), for berth and for the tuned `wasmtime serve` alike.

The engine knobs each get a row: berth's defaults (64 KiB of each freed
memory kept resident and reset with PAGEMAP_SCAN), nothing kept (every page
returned with madvise, the pre-#16 default), 4 MiB kept with and without
pagemap scan, and the opt-in `pooled` policy (warm instances reused for
1000 requests) against `wasmtime serve --max-instance-reuse-count 1000`,
with and without `-Wtimeout` (a timeout turns on the epoch checks berth
always has, to stop a guest that runs too long), and one thread layout (`TOKIO_WORKER_THREADS=1`: one runtime worker
instead of one per core);
`wasmtime serve` runs with its defaults and tuned like issue #16
(`-O pooling-memory-keep-resident=4194304 -O pooling-table-keep-resident=65536
-O pooling-pagemap-scan=y`).

Usage: bench/throughput.py [--rounds 3] [--duration 10] [--connections 32]
                           [--modules hello wasi-proxy] [--only SUBSTRING ...]
                           [--skip-install] [--no-wasmtime] [--release-dir DIR]
Prints markdown tables; the latest figures live in bench/README.md.
"""

import argparse
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
# Every bench (they all load this file) measures servers on loopback with no
# authentication: the berth processes they start run with --insecure-no-auth.
os.environ.setdefault("BERTH_INSECURE_NO_AUTH", "1")
HELLO_WASM = os.path.join(ROOT, "target", "wasm-modules", "wasm32-wasip2", "release", "hello.wasm")
WASMTIME_VERSION = "48.0.8"
# The `wasip2` crate whose `http-proxy` example is the third-party component.
WASIP2_VERSION = "1.0.4+wasi-0.2.12"
PROXY_TARGET = os.path.join(ROOT, "target", "wasm-modules", "wasi-proxy")
PROXY_WASM = os.path.join(PROXY_TARGET, "wasm32-wasip2", "release", "examples", "http_proxy.wasm")
# Where the Python and JavaScript hello components are built (delete it to rebuild).
HEAVY_DIR = os.path.join(ROOT, "target", "wasm-modules", "heavy")
# Bytes of each freed memory "kept resident" means, per component: what an
# instance of it writes, rounded up (Rust hello: 20 KiB; Python/JS: tens of MiB).
KEEP_RESIDENT = {"hello": 4 << 20, "wasi-proxy": 4 << 20, "python": 64 << 20, "js": 64 << 20}


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def ensure_tools(wasmtime=True):
    """Installs wrk (Debian) and, when `wasmtime` (the peer is used), wasmtime-cli 48 (cargo) when missing."""
    if shutil.which("wrk") is None:
        log("installing wrk with apt-get")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    if not wasmtime:
        return
    version = ""
    if shutil.which("wasmtime"):
        version = subprocess.run(["wasmtime", "--version"], capture_output=True, text=True).stdout
    if not version.startswith(f"wasmtime {WASMTIME_VERSION.split('.')[0]}."):
        log(f"installing wasmtime-cli {WASMTIME_VERSION} with cargo (takes a while, once)")
        subprocess.run(["cargo", "install", "wasmtime-cli", "--version", WASMTIME_VERSION, "--locked"], check=True)


def build():
    log("building berth and native-hello (release)")
    subprocess.run(["cargo", "build", "--release", "-p", "berth-cli", "-p", "berth-bench"], cwd=ROOT, check=True)
    assert os.path.exists(HELLO_WASM), HELLO_WASM


def build_wasi_proxy():
    """Builds the `wasip2` crate's own `http-proxy` example from its published
    source (cargo's registry copy, fetched by the modules workspace)."""
    if os.path.exists(PROXY_WASM):
        return PROXY_WASM
    subprocess.run(["cargo", "fetch", "--manifest-path", os.path.join(ROOT, "modules", "Cargo.toml")], check=True)
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--manifest-path", os.path.join(ROOT, "modules", "Cargo.toml")],
        capture_output=True, text=True, check=True).stdout)
    manifest = next(p["manifest_path"] for p in meta["packages"]
                    if p["name"] == "wasip2" and p["version"] == WASIP2_VERSION)
    log(f"building the wasip2 {WASIP2_VERSION} http-proxy example")
    subprocess.run(["cargo", "build", "--manifest-path", manifest, "--example", "http-proxy", "--features", "std",
                    "--target", "wasm32-wasip2", "--release", "--target-dir", PROXY_TARGET], check=True)
    assert os.path.exists(PROXY_WASM), PROXY_WASM
    return PROXY_WASM


# A plain `wasi:http` hello in each language, with none of the base's
# capabilities (the template's kv counter is a durable write per request, and
# `wasmtime serve` could not link `berth:base`): what both servers can run.
PLAIN_HELLO = {
    "python": ("app.py", '''from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import Fields, OutgoingBody, OutgoingResponse, ResponseOutparam


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        path = request.path_with_query() or "/"
        body = f"Hello from Python! You asked for {path}\\n".encode()
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain; charset=utf-8")]))
        response.set_status_code(200)
        outgoing = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with outgoing.write() as stream:
            stream.blocking_write_and_flush(body)
        OutgoingBody.finish(outgoing, None)
'''),
    "js": ("app.js", '''addEventListener('fetch', (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  const url = new URL(request.url);
  return new Response(`Hello from JavaScript! You asked for ${url.pathname}${url.search}\\n`, {
    headers: { 'content-type': 'text/plain; charset=utf-8' },
  });
}
'''),
}


def build_heavy(lang, name):
    """A plain hello component in Python or JavaScript (PLAIN_HELLO), made the
    way a team would: `berth new NAME --lang LANG`, the world narrowed to
    `wasi:http/proxy`, then `berth build` (the pinned componentize-py or
    componentize-js, installed by berth on first use). Built once into
    HEAVY_DIR."""
    folder = os.path.join(HEAVY_DIR, name)
    artifact = os.path.join(folder, "build", f"{name}.wasm")
    if os.path.exists(artifact):
        return artifact
    berth = os.path.join(RELEASE, "berth")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(HEAVY_DIR, exist_ok=True)
    subprocess.run([berth, "new", name, "--lang", lang, "--dir", folder], check=True, stdout=subprocess.DEVNULL)
    world = os.path.join(folder, "wit", "world.wit")
    text = open(world).read()
    assert "include berth:base/host@0.1.0;" in text, text
    open(world, "w").write(text.replace("  include berth:base/host@0.1.0;\n", ""))
    source, code = PLAIN_HELLO[lang]
    open(os.path.join(folder, source), "w").write(code)
    log(f"building {name} with `berth build` ({lang})")
    built = subprocess.run([berth, "build", folder, "-o", "json"], check=True, capture_output=True, text=True)
    artifact = json.loads(built.stdout)["artifact"]
    assert os.path.exists(artifact), artifact
    return artifact


def is_heavy(wasm):
    return os.path.getsize(wasm) > (4 << 20)


def start_announced(cmd, patterns, stream="stdout", timeout=60, env=None):
    """Starts a server bound to port 0 and returns it with the ports it
    announces: one per regex in `patterns` (group 1 is the port), read from
    its `stream`. No port is probed free and then bound by someone else.
    A thread keeps draining the stream, so the server never blocks on it."""
    pipe_out = subprocess.PIPE if stream == "stdout" else subprocess.DEVNULL
    pipe_err = subprocess.PIPE if stream == "stderr" else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=pipe_out, stderr=pipe_err, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})
    lines = queue.Queue()

    def drain(pipe):
        for line in pipe:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, args=(proc.stdout if stream == "stdout" else proc.stderr,), daemon=True).start()
    found = [None] * len(patterns)
    deadline = time.time() + timeout
    while None in found:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.time()))
        except queue.Empty:
            stop(proc, [])
            raise RuntimeError(f"{cmd[0]} did not announce its address within {timeout}s")
        if line is None:
            proc.wait()
            raise RuntimeError(f"{cmd[0]} exited ({proc.returncode}) before announcing its address")
        for i, pattern in enumerate(patterns):
            m = re.search(pattern, line)
            if m and found[i] is None:
                found[i] = int(m.group(1))
    assert all(found), (cmd[0], found)
    return proc, found


# What `berth base` prints once it listens (see crates/cli/src/commands/base.rs).
BERTH_ANNOUNCES = [r"^\s*ingress\s+http://[\d.]+:(\d+)", r"^\s*ops API\s+http://[\d.]+:(\d+)"]


def start_berth(data_dir, extra=(), env=None):
    """`berth base` on ports the system picks; returns (process, ingress port, ops port)."""
    proc, (port, ops) = start_announced(
        [os.path.join(RELEASE, "berth"), "base", "--listen", "127.0.0.1:0", "--ops", "127.0.0.1:0",
         "--data-dir", data_dir, *extra], BERTH_ANNOUNCES, env=env)
    return proc, port, ops


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http(method, url, body=None, headers=None, timeout=10):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, socket.timeout):
        return None, b""


def wait_until(pred, timeout=60, what="server"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.005)
    raise RuntimeError(f"{what} did not come up within {timeout}s")


def start(cmd, **kw):
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **kw)


def stop(proc, ports):
    """SIGKILL the server's process group and wait until it and its ports are gone."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    wait_until(lambda: not any(port_open(p) for p in ports), what="port release")


def leb(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def variant(wasm, tag):
    """The component plus a custom section: same behaviour, distinct digest."""
    name = b"berth-bench"
    content = leb(len(name)) + name + tag.encode()
    return wasm + b"\x00" + leb(len(content)) + content


class Berth:
    """A `berth base` process on fresh ports and a fresh (or given) data dir."""

    def __init__(self, data_dir, extra=(), env=None):
        self.started = time.perf_counter()
        self.proc, self.port, self.ops = start_berth(data_dir, extra, env)
        wait_until(lambda: http("GET", f"http://127.0.0.1:{self.ops}/v1/health")[0] == 200, what="berth")

    def install(self, name, wasm, version="1.0.0", limits=None):
        """Uploads `wasm` as name@version; `limits` (a dict of the install
        request's limits, e.g. a `policy`) travel in the x-berth-install header."""
        headers = {"content-type": "application/wasm"}
        if limits:
            headers["x-berth-install"] = json.dumps({"name": name, "version": version, "limits": limits})
        t0 = time.perf_counter()
        status, body = http("POST", f"http://127.0.0.1:{self.ops}/v1/modules?name={name}&version={version}",
                            body=wasm, headers=headers)
        wall = (time.perf_counter() - t0) * 1e3
        assert status in (200, 201), (status, body)
        return json.loads(body)["module"], wall

    def uninstall(self, name):
        status, body = http("DELETE", f"http://127.0.0.1:{self.ops}/v1/modules/{name}")
        assert status == 200, (status, body)

    def stop(self):
        stop(self.proc, [self.port, self.ops])


def parse_wrk(out):
    """Requests/s, p50 and p99 (ms), total requests and failed ones from wrk --latency output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    bad = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        bad += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        bad += sum(int(x) for x in m.groups())
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50": pct(50), "p99": pct(99), "errors": bad, "requests": total}


def wrk_command(url, duration, connections, threads, script=None):
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
            *(["-s", script] if script else []), url]


def run_wrk(url, duration, connections, threads, script=None):
    out = subprocess.run(wrk_command(url, duration, connections, threads, script),
                         capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


# A heavy component's compile cache, copied into each new base's data dir so
# that only the first base of a run compiles it (keyed by artifact path).
SEEDED_CACHES = {}


def serve_berth(tmp, wasm, extra=(), limits=None, env=None):
    data_dir = tempfile.mkdtemp(dir=tmp)
    heavy = is_heavy(wasm)
    if heavy and wasm in SEEDED_CACHES:
        shutil.copytree(SEEDED_CACHES[wasm], os.path.join(data_dir, "cache"))
    b = Berth(data_dir, extra, env)
    b.install("hello", open(wasm, "rb").read(), limits=limits)
    if heavy and "winch" not in extra:
        # Measure the code a module ends up on: wait for Cranelift's.
        wait_until(lambda: module_tier(b, "hello") == "cranelift", timeout=300, what="the Cranelift tier")
        if wasm not in SEEDED_CACHES:
            seed = tempfile.mkdtemp(dir=tmp)
            shutil.rmtree(seed)
            shutil.copytree(os.path.join(data_dir, "cache"), seed)
            SEEDED_CACHES[wasm] = seed
    return b.proc, [b.port, b.ops], f"http://127.0.0.1:{b.port}/hello"


def module_tier(b, name):
    status, body = http("GET", f"http://127.0.0.1:{b.ops}/v1/modules/{name}")
    return json.loads(body)["modules"][0].get("tier") if status == 200 else None


def serve_berth_madvise(tmp, wasm):
    # Nothing kept resident: every freed page goes back with madvise and
    # faults in again (berth's default before issue #16).
    return serve_berth(tmp, wasm, ["--memory-keep-resident", "0", "--table-keep-resident", "0"])


def serve_berth_resident(tmp, wasm):
    # KEEP bytes of each freed memory kept resident, reset where written (pagemap scan).
    return serve_berth(tmp, wasm, ["--memory-keep-resident", str(KEEP)])


def serve_berth_resident_memset(tmp, wasm):
    # KEEP bytes kept, but all of them rewritten on every reset (no pagemap scan).
    return serve_berth(tmp, wasm, ["--memory-keep-resident", str(KEEP), "--no-pagemap-scan"])


def serve_berth_winch(tmp, wasm):
    # The baseline tier alone: Winch code, no Cranelift (issue #17's per-tier figures).
    return serve_berth(tmp, wasm, ["--tiers", "winch"])


def serve_berth_pooled(tmp, wasm):
    # The opt-in pooled policy: one warm instance serves up to 1000 requests.
    return serve_berth(tmp, wasm, limits={"policy": {"pooled": {"maxRequests": 1000, "maxIdleMs": 10000}}})


def serve_berth_one_worker(tmp, wasm):
    # Thread layout: one tokio worker thread instead of one per core.
    return serve_berth(tmp, wasm, env={"TOKIO_WORKER_THREADS": "1"})


# Bytes "kept resident" means for the component being measured (KEEP_RESIDENT).
KEEP = 4 << 20


def wasmtime_tuned():
    return ["-O", f"pooling-memory-keep-resident={KEEP}", "-O", f"pooling-table-keep-resident={64 << 10}",
            "-O", "pooling-pagemap-scan=y"]


def serve_wasmtime_with(wasm, extra):
    # A heavy component compiles for seconds on the first start (then comes
    # from wasmtime's own compile cache).
    proc, (port,) = start_announced(["wasmtime", "serve", "-Scli", *extra, "--addr", "127.0.0.1:0", wasm],
                                    [r"Serving HTTP on http://[\d.]+:(\d+)"], stream="stderr", timeout=300)
    url = f"http://127.0.0.1:{port}/hello"
    wait_until(lambda: http("GET", url)[0] == 200, what="wasmtime serve")
    return proc, [port], url


def serve_wasmtime_tuned(tmp, wasm):
    return serve_wasmtime_with(wasm, wasmtime_tuned())


def serve_wasmtime_reuse(tmp, wasm):
    # wasmtime's own instance reuse: the peer of berth's pooled policy.
    return serve_wasmtime_with(wasm, ["--max-instance-reuse-count", "1000"])


def serve_wasmtime_reuse_timeout(tmp, wasm):
    # The same, able to stop a guest that runs too long as berth always is:
    # `-Wtimeout` turns on epoch interruption, whose checks at function
    # entries and loop heads cost guest code some speed.
    return serve_wasmtime_with(wasm, ["--max-instance-reuse-count", "1000", "-Wtimeout=30s"])


def serve_wasmtime(tmp, wasm):
    return serve_wasmtime_with(wasm, [])


def serve_native(tmp, wasm):
    proc, (port,) = start_announced([os.path.join(RELEASE, "native-hello"), "127.0.0.1:0"],
                                    [r"serving on http://[\d.]+:(\d+)"], stream="stderr")
    url = f"http://127.0.0.1:{port}/hello"
    wait_until(lambda: http("GET", url)[0] == 200, what="native-hello")
    return proc, [port], url


def serve_berth_unobserved(tmp, wasm):
    # Metrics, recent stats and log capture off: their cost is the difference.
    return serve_berth(tmp, wasm, ["--no-observability"])


def mib(n):
    return f"{n >> 20} MiB"


SERVERS = {
    "berth": serve_berth,
    "berth, Winch tier": serve_berth_winch,
    "berth, observability off": serve_berth_unobserved,
    "berth, nothing kept resident (madvise)": serve_berth_madvise,
    "berth, KEEP kept resident": serve_berth_resident,
    "berth, KEEP kept resident, no pagemap scan": serve_berth_resident_memset,
    "berth, pooled (1000 requests)": serve_berth_pooled,
    "berth, 1 worker thread": serve_berth_one_worker,
    "wasmtime serve": serve_wasmtime,
    "wasmtime serve, tuned": serve_wasmtime_tuned,
    "wasmtime serve --max-instance-reuse-count 1000": serve_wasmtime_reuse,
    "wasmtime serve --max-instance-reuse-count 1000 -Wtimeout=30s": serve_wasmtime_reuse_timeout,
    "native hyper": serve_native,
}
# Rows every ratio below needs, whatever --only selects.
REQUIRED = ("berth", "wasmtime serve", "native hyper")


def throughput(args, tmp, wasm, module):
    global KEEP
    KEEP = KEEP_RESIDENT[module]
    servers = {name.replace("KEEP", mib(KEEP)): serve for name, serve in SERVERS.items()}
    order = [name for name in servers
             if (name in REQUIRED or not args.only or any(o in name for o in args.only))
             and not (args.no_wasmtime and name.startswith("wasmtime"))]
    results = {name: [] for name in order}
    for rnd in range(args.rounds):
        for name in order[rnd % len(order):] + order[:rnd % len(order)]:
            proc, ports, url = servers[name](tmp, wasm)
            try:
                run_wrk(url, 2, args.connections, args.threads)  # warm-up
                r = run_wrk(url, args.duration, args.connections, args.threads)
            finally:
                stop(proc, ports)
            log(f"{module} round {rnd + 1} {name}: {r['rps']:.0f} rps, p50 {r['p50']:.3f} ms, p99 {r['p99']:.3f} ms, errors {r['errors']}")
            results[name].append(r)
    return results


def install_times(tmp, warm_runs=20):
    wasm = open(HELLO_WASM, "rb").read()
    data_dir = tempfile.mkdtemp(dir=tmp)
    b = Berth(data_dir)
    try:
        cold = []
        for i in range(5):
            info, wall = b.install(f"cold{i}", variant(wasm, f"cold-{i}-{time.time()}"))
            assert info["compileCache"] == "miss"
            cold.append((info["installDurationMs"], wall))
        warm = []
        bytes_ = variant(wasm, "warm")
        b.install("warm", bytes_)  # compiles once
        # The install answers on Winch's code; the code it caches is
        # written in the background. Reinstalled before that, it compiles
        # again (a miss), so wait for the cache file first.
        hexdigest = hashlib.sha256(bytes_).hexdigest()
        compiled = os.path.join(data_dir, "cache", "compiled")
        wait_until(lambda: os.path.isdir(compiled) and any(f.startswith(hexdigest) for f in os.listdir(compiled)),
                   what="the warm module's compiled code in the cache")
        for _ in range(warm_runs):
            b.uninstall("warm")
            info, wall = b.install("warm", bytes_)
            assert info["compileCache"] == "hit", info
            warm.append((info["installDurationMs"], wall))
        return cold, warm
    finally:
        b.stop()


def restart_time(tmp, modules=10, rounds=5):
    wasm = open(HELLO_WASM, "rb").read()
    data_dir = tempfile.mkdtemp(dir=tmp)
    b = Berth(data_dir)
    for i in range(modules):
        b.install(f"m{i}", variant(wasm, f"restart-{i}"))
    b.stop()
    times = []
    for _ in range(rounds):
        b = Berth.__new__(Berth)
        t0 = time.perf_counter()
        b.proc, b.port, b.ops = start_berth(data_dir)
        pending = set(range(modules))
        deadline = time.time() + 30
        while pending and time.time() < deadline:
            for i in list(pending):
                if http("GET", f"http://127.0.0.1:{b.port}/m{i}", timeout=1)[0] == 200:
                    pending.discard(i)
            if pending:
                time.sleep(0.002)
        elapsed = (time.perf_counter() - t0) * 1e3
        b.stop()
        assert not pending, f"modules {pending} never served after restart"
        times.append(elapsed)
    return times


def fmt_range(values, f="{:.0f}"):
    return f"{f.format(statistics.median(values))} ({f.format(min(values))}–{f.format(max(values))})"


def print_throughput(args, module, results, cpu):
    print(f"\n## HTTP throughput: `{module}`, wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
          f"{args.rounds} interleaved rounds")
    print(f"machine: {os.cpu_count()} cores, {cpu}\n")
    print("| server | requests/s median (min–max) | p50 ms median (min–max) | p99 ms median (min–max) | errors |")
    print("|---|---|---|---|---|")
    med = {}
    for name, runs in results.items():
        rps = [r["rps"] for r in runs]
        med[name] = statistics.median(rps)
        print(f"| {name} | {fmt_range(rps)} | {fmt_range([r['p50'] for r in runs], '{:.3f}')} | "
              f"{fmt_range([r['p99'] for r in runs], '{:.3f}')} | {sum(r['errors'] for r in runs)} |")
    print()
    for ours, peer in [("berth", "wasmtime serve"),
                       ("berth", "native hyper"),
                       ("berth", "wasmtime serve, tuned"),
                       (f"berth, {mib(KEEP_RESIDENT[module])} kept resident", "wasmtime serve, tuned"),
                       ("berth, Winch tier", "berth"),
                       ("berth, pooled (1000 requests)", "wasmtime serve --max-instance-reuse-count 1000"),
                       ("berth, pooled (1000 requests)",
                        "wasmtime serve --max-instance-reuse-count 1000 -Wtimeout=30s"),
                       ("berth, 1 worker thread", "berth")]:
        if ours in med and peer in med:
            print(f"- {ours} / {peer} = **{med[ours] / med[peer]:.2f}x** (medians)")


MODULES = {
    "hello": lambda: HELLO_WASM,
    "wasi-proxy": build_wasi_proxy,
    "python": lambda: build_heavy("python", "hello-py"),
    "js": lambda: build_heavy("js", "hello-js"),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--only", nargs="*", default=[],
                    help="run only the throughput rows whose name contains one of these (plus berth, "
                         "wasmtime serve and native hyper, which the ratios need)")
    ap.add_argument("--modules", nargs="*", default=["hello", "wasi-proxy"], choices=list(MODULES),
                    help="the components to serve (python and js: the heavy ones, not run by default)")
    ap.add_argument("--skip-install", action="store_true",
                    help="skip the install-time and restart measurements")
    ap.add_argument("--no-wasmtime", action="store_true",
                    help="leave out the `wasmtime serve` rows (and do not install it): berth's rows and "
                         "native hyper only, no ratio to the peer")
    ap.add_argument("--release-dir", help="where `berth` and `native-hello` are (default target/release; "
                                           "e.g. a copy of an earlier build, for an A/B)")
    args = ap.parse_args()

    global RELEASE
    if args.release_dir:
        RELEASE = os.path.abspath(args.release_dir)
    ensure_tools(wasmtime=not args.no_wasmtime)
    if not args.skip_build:
        build()
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
    tmp = tempfile.mkdtemp(prefix="berth-bench-")
    try:
        results = {module: throughput(args, tmp, MODULES[module](), module) for module in args.modules}
        # Printed before the install timings, so a failure there loses no figure.
        for module, rows in results.items():
            print_throughput(args, module, rows, cpu)
        sys.stdout.flush()
        if args.skip_install:
            return
        cold, warm = install_times(tmp)
        restart = restart_time(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print("## Module install (`hello`, upload over the ops API)\n")
    print("| install | server-side ms median (min–max) | client wall ms median (min–max) |")
    print("|---|---|---|")
    print(f"| cold (compile, {len(cold)} distinct digests) | {fmt_range([c[0] for c in cold], '{:.1f}')} | {fmt_range([c[1] for c in cold], '{:.1f}')} |")
    print(f"| warm (compile cache hit, {len(warm)} runs) | {fmt_range([w[0] for w in warm], '{:.2f}')} | {fmt_range([w[1] for w in warm], '{:.2f}')} |")
    print(f"\n## Restart: process start → all 10 installed modules answering 200 ({len(restart)} runs)\n")
    print(f"{fmt_range(restart, '{:.0f}')} ms")


if __name__ == "__main__":
    main()
