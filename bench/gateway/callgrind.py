#!/usr/bin/env python3
"""Instructions per request of `retort gateway`, measured with callgrind (load-independent).

    python3 bench/gateway/callgrind.py [--n 2000] [--streams 200] [--keep DIR]

Starts the release `retort-sim` (natively) and `retort gateway` under `valgrind --tool=callgrind`
with the bench's Retort configuration (auth on, every model an alias over a primary and a fallback
target), sends N non-streaming requests (the body of scenario a) and then S 64-chunk streams
(scenario c) on one keep-alive connection, stops the gateway with SIGTERM and reads the total.
Each figure is (total of a run − total of a run with none of that work) / count, so start-up and
shutdown cancel out. Build first: cargo build --release -p retort -p retort-sim.

The configuration mirrors `src/configs.rs` (sim_toml, retort_toml) for the two models used here.
"""
import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KEY = "sk-retort-bench"
FAST, STREAM = "sim-fast", "sim-stream64"
# Also served by the simulator here (wakeups.py): 8 tokens in one burst, and 8 tokens at 1,000
# tokens/s (configs.rs MODEL_PACED).
BURST, PACED = "sim-burst8", "sim-paced8"
# Each model's lines in the simulator's configuration.
SIM_MODELS = {FAST: "", STREAM: "answer_tokens = 64\n", BURST: "answer_tokens = 8\n", PACED: "answer_tokens = 8\ntokens_per_sec = 1000\n"}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc, secs=120):
    end = time.time() + secs
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"process exited early with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"port {port} did not open in {secs} s")


def configs(tmp, sim_port, http_port, grpc_port):
    sim = os.path.join(tmp, "sim.toml")
    with open(sim, "w") as f:
        f.write("strict_models = true\n" + "".join(f'[models."{m}"]\n{lines}' for m, lines in SIM_MODELS.items()))
    gw = os.path.join(tmp, "retort.toml")
    s = f"""[server]
http_addr = "127.0.0.1:{http_port}"
grpc_addr = "127.0.0.1:{grpc_port}"
require_auth = true

[[users]]
name = "bench"
team = "bench"
discipline = "backend"
level = "senior"
key = "{KEY}"

[providers.sim]
kind = "openai"
base_url = "http://127.0.0.1:{sim_port}/v1"

[providers.sim-fallback]
kind = "openai"
base_url = "http://127.0.0.1:{sim_port}/v1"

[routing]
first_token_timeout_ms = 30000
stall_timeout_ms = 30000
total_timeout_ms = 60000
max_retries_per_target = 1

[circuit]
failure_threshold = 5
open_ms = 30000
"""
    for m in SIM_MODELS:
        s += f"""
[models."{m}-primary"]
provider = "sim"
model = "{m}"

[models."{m}-fallback"]
provider = "sim-fallback"
model = "{m}"

[aliases."{m}"]
targets = ["{m}-primary", "{m}-fallback"]
"""
    with open(gw, "w") as f:
        f.write(s)
    return sim, gw


def body(model, stream):
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "Say something short for the gateway benchmark."}], "stream": stream})


def drive(port, n, streams):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    hdr = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    # One warm-up request of each kind opens the upstream connection: counted in every run alike.
    for model, stream, count in ((FAST, False, 1 + n), (STREAM, True, 1 + streams)):
        b = body(model, stream)
        for _ in range(count):
            c.request("POST", "/v1/chat/completions", b, hdr)
            r = c.getresponse()
            data = r.read()
            if r.status != 200:
                raise SystemExit(f"HTTP {r.status}: {data[:300]!r}")
            if stream and b"[DONE]" not in data:
                raise SystemExit("stream without [DONE]")
    c.close()


def start(tmp, retort, wrap=()):
    """The release simulator and `retort gateway` (its command prefixed by `wrap`), both listening:
    (sim, gateway, the gateway's HTTP port)."""
    sim_port, http_port, grpc_port = free_port(), free_port(), free_port()
    sim_cfg, gw_cfg = configs(tmp, sim_port, http_port, grpc_port)
    rel = os.path.join(ROOT, "target", "release")
    env = dict(os.environ, RUST_LOG="warn")
    sim = subprocess.Popen([os.path.join(rel, "retort-sim"), "--addr", f"127.0.0.1:{sim_port}", "--config", sim_cfg], env=env, stderr=subprocess.DEVNULL)
    gw = subprocess.Popen([*wrap, retort, "gateway", "--config", gw_cfg], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_port(sim_port, sim)
        wait_port(http_port, gw)
    except BaseException:
        stop(sim, gw)
        raise
    return sim, gw, http_port


def stop(sim, gw):
    gw.send_signal(signal.SIGTERM)
    gw.wait(120)
    sim.terminate()
    sim.wait(30)


def run(args, tmp, n, streams, tag):
    out = os.path.join(tmp, f"callgrind.out.{tag}")
    sim, gw, http_port = start(tmp, args.retort, ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"))
    try:
        drive(http_port, n, streams)
    finally:
        stop(sim, gw)
    with open(out) as f:
        for line in f:
            m = re.match(r"(?:summary|totals):\s+(\d+)", line)
            if m:
                return int(m.group(1)), out
    raise SystemExit(f"no total in {out}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="non-streaming requests")
    ap.add_argument("--streams", type=int, default=200, help="64-chunk streams")
    ap.add_argument("--retort", default=os.path.join(ROOT, "target", "release", "retort"), help="the retort binary to measure")
    ap.add_argument("--keep", help="copy the callgrind outputs here (for callgrind_annotate)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base, _ = run(args, tmp, 0, 0, "base")
        req, req_out = run(args, tmp, args.n, 0, "requests")
        st, st_out = run(args, tmp, 0, args.streams, "streams")
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            for p in (req_out, st_out):
                subprocess.run(["cp", p, args.keep], check=True)
    per_req = (req - base) / args.n
    per_stream = (st - base) / args.streams
    print(f"base run: {base} instructions")
    print(f"per non-streaming request: {per_req / 1000:.1f} k instructions (N={args.n})")
    print(f"per 64-chunk stream: {per_stream / 1000:.1f} k instructions ({per_stream / 64 / 1000:.2f} k per chunk, S={args.streams})")


if __name__ == "__main__":
    sys.exit(main())
