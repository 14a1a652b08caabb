"""Benchmark `familiar chat` through `familiar serve` against a cold call that loads the model itself.

    python scripts/bench_serve.py                       # the demo model on the CPU; prints the figures
    python scripts/bench_serve.py --out serve.json      # also writes them as JSON
    python scripts/bench_serve.py --model /models/Anole-7b-v0.1-hf --device cuda

Each call is a fresh `familiar chat` process, timed from start to exit (imports, model load or server round trip,
answer), on a library in a temporary folder. The cold calls run first, with no server; then the server starts
(its time to answer is reported too) and the same question is asked through it. A call that was meant to go
through the server and did not say so on stderr stops the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from desktop.server import discovery  # noqa: E402
from desktop.server.client import probe  # noqa: E402

SERVER_START_TIMEOUT_S = 900


def familiar(*args: str) -> list[str]:
    return [sys.executable, "-m", "desktop.cli.main", *args]


def timed_chat(env: dict[str, str], options: argparse.Namespace) -> tuple[float, str]:
    command = familiar("chat", options.question, "--model", options.model, "--device", options.device)
    command += ["--seed", "1", "--max-tokens", str(options.max_tokens)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"familiar chat failed: {done.stderr.strip()}")
    return seconds, done.stderr


def start_server(env: dict[str, str], library: Path, options: argparse.Namespace) -> tuple[subprocess.Popen, float]:
    command = familiar("serve", "--port", "0", "--model", options.model, "--device", options.device)
    start = time.perf_counter()
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while True:
        info = discovery.read_running(library)
        if info is not None and probe(info) is not None:
            return server, time.perf_counter() - start
        if server.poll() is not None:
            sys.exit(f"familiar serve exited: {server.communicate()[1].strip()}")
        if time.perf_counter() - start > SERVER_START_TIMEOUT_S:
            server.kill()
            sys.exit("familiar serve did not answer in time")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="model for both the server and the cold calls (default: demo)")
    parser.add_argument("--device", default="cpu", help="device (default: cpu)")
    parser.add_argument("--repeats", type=int, default=3, help="calls of each kind, median reported (default: 3)")
    parser.add_argument("--question", default="What colour is the red striped circle?", help="the question asked")
    parser.add_argument("--max-tokens", type=int, default=8, help="answer length limit (default: 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in every process (default: 2)")
    parser.add_argument("--out", type=Path, help="also save the results as JSON here")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="familiar-bench-serve-") as folder:
        library = Path(folder)
        env = {**os.environ, "PYTHONPATH": str(REPO), "FAMILIAR_DATA": str(library)}
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(options.threads)
        cold = []
        for _ in range(options.repeats):
            seconds, err = timed_chat(env, options)
            if "using the server" in err:
                sys.exit("a cold call used a server")
            cold.append(seconds)
        server, startup = start_server(env, library, options)
        try:
            served = []
            for _ in range(options.repeats):
                seconds, err = timed_chat(env, options)
                if "familiar: using the server at" not in err:
                    sys.exit(f"a call did not use the server: {err.strip()}")
                served.append(seconds)
        finally:
            server.send_signal(signal.SIGTERM)
            server.communicate(timeout=60)

    results = {
        "model": options.model,
        "device": options.device,
        "threads": options.threads,
        "repeats": options.repeats,
        "max_tokens": options.max_tokens,
        "cold_call_s": cold,
        "server_call_s": served,
        "server_ready_s": startup,
        "cold_median_s": statistics.median(cold),
        "server_median_s": statistics.median(served),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    print(f"familiar chat, {options.model} on {options.device}, {options.threads} threads, median of {options.repeats}")
    print(f"  cold (loads the model):    {results['cold_median_s']:.2f} s   {[round(s, 2) for s in cold]}")
    print(f"  through familiar serve:    {results['server_median_s']:.2f} s   {[round(s, 2) for s in served]}")
    print(f"  server start until ready:  {startup:.2f} s")
    print(f"  speed-up:                  {results['cold_median_s'] / results['server_median_s']:.1f}x")
    if options.out:
        options.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
