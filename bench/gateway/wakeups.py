#!/usr/bin/env python3
"""Context switches and CPU per request of `retort gateway` (`perf stat` on the gateway alone).

    python3 bench/gateway/wakeups.py [--n 400] [--rounds 2] [--retort BIN ...]

Starts the release `retort-sim` and `retort gateway` with the bench's Retort configuration (see
callgrind.py) and sends, over one keep-alive connection, N requests of each kind: non-streaming
(`plain`, scenario a's model), 8-token streams delivered in one burst (`burst`), and 8-token streams
paced at 1,000 tokens/s (`paced`, scenario c′'s model), and 64-token streams in one burst
(`burst64`, scenario c's model) — each kind after 50 warm-up requests, with
`perf stat -e context-switches,task-clock -p <gateway>` counting while they run. Several `--retort`
binaries are measured alternately, `--rounds` times each, so they share the host's load.

Context switches are what a request costs in wake-ups: on a 2-vCPU virtual machine each one costs
tens of µs of CPU, and a wake of an idle worker lands on the core the caller and the provider need.
The client's time to first token (time to the answer for `plain`) is printed too; it moves with the
host's load. Build first: cargo build --release -p retort -p retort-sim. Needs `perf`.
"""
import argparse
import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from callgrind import BURST, FAST, KEY, PACED, ROOT, STREAM, body, start, stop  # noqa: E402

KINDS = {"plain": (FAST, False), "burst": (BURST, True), "paced": (PACED, True), "burst64": (STREAM, True)}


def requests(port, model, stream, n):
    """N requests over one connection; the sorted client-side times to the first token (or answer)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    hdr = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    b = body(model, stream)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        c.request("POST", "/v1/chat/completions", b, hdr)
        r = c.getresponse()
        if r.status != 200:
            raise SystemExit(f"HTTP {r.status}: {r.read()[:300]!r}")
        first = None
        if stream:
            while line := r.readline():
                if first is None and b'"content":"' in line and b'"content":""' not in line:
                    first = time.perf_counter()
                if line.startswith(b"data: [DONE]"):
                    break
            if first is None:
                raise SystemExit("a stream without a token")
        r.read()
        times.append((first or time.perf_counter()) - t0)
    c.close()
    return sorted(times)


def measure(tmp, retort, n):
    """{kind: (context switches per request, gateway CPU ms per request, client p50 µs)}."""
    sim, gw, port = start(tmp, retort)
    out = {}
    try:
        for kind, (model, stream) in KINDS.items():
            requests(port, model, stream, 50)
            stat = os.path.join(tmp, f"perf-{kind}.txt")
            perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "context-switches,task-clock", "-p", str(gw.pid), "-o", stat])
            time.sleep(0.3)
            times = requests(port, model, stream, n)
            perf.send_signal(signal.SIGINT)
            perf.wait(30)
            counts = {}
            with open(stat) as f:
                for line in f:
                    fields = line.strip().split(",")
                    if len(fields) > 2 and re.match(r"^[\d.]+$", fields[0]):
                        counts[fields[2]] = float(fields[0])
            out[kind] = (counts["context-switches"] / n, counts["task-clock"] / n, times[n // 2] * 1e6)
    finally:
        stop(sim, gw)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400, help="requests of each kind")
    ap.add_argument("--rounds", type=int, default=2, help="times each binary is measured, alternated")
    ap.add_argument("--retort", nargs="+", default=[os.path.join(ROOT, "target", "release", "retort")], help="the retort binaries to measure")
    args = ap.parse_args()
    print("| binary | round | kind | context switches / request | gateway CPU / request | client p50 |")
    print("|---|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(1, args.rounds + 1):
            for b in args.retort:
                for kind, (cs, cpu, p50) in measure(tmp, b, args.n).items():
                    print(f"| {b} | {r} | {kind} | {cs:.2f} | {cpu:.3f} ms | {p50:.0f} µs |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
