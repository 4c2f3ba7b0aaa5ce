"""
The blocking face's cost per call over the Deferred core (issue 5).

The same loop of --calls get_device calls, one at a time, two ways:

  blocking  exp.start(...) then instance.get_device(uuid): the call crosses to
            crochet's reactor thread and the caller waits for the result
  twisted   ExpService in a Twisted main program: await service.get_device(uuid)

Each side runs in its own process (crochet and a Twisted main program cannot
share one) against its own fresh server process (python -m twisted
exp-server --no-access-log, temporary database), both as the demo device with
the network disabled.  The sides alternate --repeat times; the figure per side
is the median of its runs.  Goal: the blocking face adds under 15 %.

    .venv/bin/python benchmarks/blocking.py [--calls 2000] [--repeat 3]

This is a script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from network import Row, cpu_seconds, machine_busy_seconds, table

from exp.server.testing import DEMO, ServerProcess

SERVER_ARGS = ("--no-access-log",)
WARMUP = 100


def _report(wall: float, cpu: float, calls: int) -> None:
    print(json.dumps({"wall": wall, "cpu": cpu, "calls": calls}), flush=True)


def side_blocking(url: str, calls: int) -> None:
    import exp

    instance = exp.start(host=url, uuid=DEMO["device_uuid"], secret=DEMO["device_secret"],
                         enable_network=False)
    uuid = DEMO["device_uuid"]
    for _ in range(WARMUP):
        instance.get_device(uuid)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        instance.get_device(uuid)
    _report(time.perf_counter() - started, time.process_time() - cpu, calls)
    exp.stop()


def side_twisted(url: str, calls: int) -> None:
    from twisted.internet import defer, task

    from exp.twisted import ExpService

    async def main(reactor: Any) -> None:
        service = ExpService(host=url, uuid=DEMO["device_uuid"], secret=DEMO["device_secret"],
                             enable_network=False, reactor=reactor)
        service.startService()
        await service.whenAuthenticated()
        uuid = DEMO["device_uuid"]
        for _ in range(WARMUP):
            await service.get_device(uuid)
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            await service.get_device(uuid)
        _report(time.perf_counter() - started, time.process_time() - cpu, calls)
        await service.stopService()

    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))


def _children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_side(side: str, calls: int) -> dict[str, float]:
    """One side in a child process against a fresh server; its figures and the noise."""
    with ServerProcess(*SERVER_ARGS) as server:
        assert server.process is not None
        pid = server.process.pid
        server0, machine0, child0 = cpu_seconds(pid), machine_busy_seconds(), _children()
        started = time.perf_counter()
        child = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--side", side, server.url,
             str(calls)], capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
        server_cpu = cpu_seconds(pid) - server0
        busy = machine_busy_seconds() - machine0 - (_children() - child0)
    if child.returncode != 0:
        raise RuntimeError(f"the {side} side failed:\n{child.stderr}")
    result: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    result["server_cpu"] = server_cpu
    # cores used by every process but this side's and its server's, over the child's run
    result["other"] = max(0.0, busy - server_cpu) / elapsed
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--calls", type=int, default=2000, help="get_device calls (2000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (3)")
    parser.add_argument("--side", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side, url, calls = args.side
        {"blocking": side_blocking, "twisted": side_twisted}[side](url, int(calls))
        return
    from network import machine

    print("\n".join(machine()[:2]))
    print(f"server  : python -m twisted exp-server {' '.join(SERVER_ARGS)} (no line per"
          " request in the log), a fresh one per run; each side in its own process")
    print(f"load    : {os.getloadavg()[0]:.2f} (1 min average) before the first run",
          flush=True)
    runs: dict[str, list[dict[str, float]]] = {"twisted": [], "blocking": []}
    for i in range(args.repeat):
        for side in runs:
            print(f"  .. run {i + 1}: {side}, {args.calls} calls", file=sys.stderr, flush=True)
            runs[side].append(run_side(side, args.calls))
    per_call = {side: statistics.median(r["wall"] / r["calls"] * 1e6 for r in rs)
                for side, rs in runs.items()}
    cpu_call = {side: statistics.median(r["cpu"] / r["calls"] * 1e6 for r in rs)
                for side, rs in runs.items()}
    added = per_call["blocking"] / per_call["twisted"] - 1
    rows = []
    for side in runs:
        walls = ", ".join(f"{r['wall'] / r['calls'] * 1e6:.0f}" for r in runs[side])
        noise = ", ".join(f"{r['other']:.2f}" for r in runs[side])
        rows.append(Row(side, "wall time per get_device call, median of runs",
                        f"{per_call[side]:.0f} us",
                        note=f"runs: {walls} us; client CPU per call {cpu_call[side]:.0f} us;"
                        f" other processes used {noise} cores during the runs"))
    rows.append(Row("ratio", "blocking / twisted per call", f"{1 + added:.3f}",
                    "< 1.15", added < 0.15,
                    f"the blocking face adds {added:+.1%} per call "
                    f"({per_call['blocking'] - per_call['twisted']:+.0f} us)"))
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
