"""A worker that misbehaves on purpose (ROGUE_MODE), for the governor's real-process tests.

It speaks the worker protocol like the real one and pretends to obey every command, but:
  greedy  ignores threads, batch and pause, and burns every core in child processes
  hang    keeps sending heartbeats but never advances its step
  leak    allocates memory steadily while it trains
  crash   exits with an error after a few steps, never saving a checkpoint
  hoard   takes ROGUE_HOARD_MB at once, then trains on with that large, stable footprint
  slow    a long set-up, then a long pause between steps, each reporting progress as the real one
          does (ROGUE_SLOW_S seconds each); with ROGUE_SLOW_SILENT=1 the pause sends heartbeats only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from macgpt.worker.channel import ZmqLink
from macgpt.worker.progress import Reporter


def slow_phase(link: ZmqLink, phase: str, seconds: float, silent: bool = False) -> None:
    """``seconds`` of work between steps, reported like the real worker's (or only heartbeats)."""
    rep = Reporter(link.send, phase, total=int(seconds * 10), unit="items")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.1)
        if silent:
            link.send("heartbeat", step=0, paused=False)
        else:
            rep.advance()
    rep.finish()


def main() -> int:
    ap = argparse.ArgumentParser()
    for flag in ("--job-dir", "--endpoint", "--job", "--priority", "--cache-dir"):
        ap.add_argument(flag)
    args = ap.parse_args()
    mode = os.environ["ROGUE_MODE"]
    link = ZmqLink(args.endpoint, int(args.job))
    link.send("hello", pid=os.getpid())
    slow = float(os.environ.get("ROGUE_SLOW_S", "0"))
    if mode == "slow":
        slow_phase(link, "tokenizer", slow)
    link.send("started", step=0, max_steps=10**9, threads=2, batch_size=16, micro_batch=16)
    children = []
    if mode == "greedy":
        burn = "import os\np = os.getppid()\nwhile os.getppid() == p: pass"  # ends when orphaned
        children = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(os.cpu_count() or 2)]
    hoard: list[bytearray] = []
    if mode == "hoard":
        block = bytearray(int(os.environ["ROGUE_HOARD_MB"]) * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        hoard.append(block)
    step, last_beat = 0, 0.0
    try:
        while True:
            for cmd in link.poll(0):
                link.send("reply", rid=cmd.get("rid"), ok=True, result={})  # "yes, sure" - and ignores it
            if link.orphaned():
                return 0
            now = time.monotonic()
            if mode != "hang":
                step += 1
                if step % 5 == 0:
                    link.send("metrics", step=step, max_steps=10**9, epoch=0, loss=5.0, avg_loss=5.0, lr=1e-3,
                              steps_per_s=10.0, tokens_per_s=100.0, threads=2, batch_size=16, micro_batch=16,
                              rss=0, peak_rss=0)
            if mode == "leak":
                block = bytearray(int(os.environ.get("ROGUE_LEAK_MB", "40")) * 2**20)
                for i in range(0, len(block), 4096):
                    block[i] = 1  # touch every page so it is resident
                hoard.append(block)
            if mode == "slow" and step == 20:
                slow_phase(link, "eval", slow, silent=os.environ.get("ROGUE_SLOW_SILENT") == "1")
            if mode == "crash" and step >= 5:
                link.send("failed", message="rogue crash on purpose", retry=True)
                return 1
            if now - last_beat >= 0.5:
                last_beat = now
                link.send("heartbeat", step=step, paused=False)
            time.sleep(0.1)
    finally:
        for c in children:
            c.kill()
        link.close()


if __name__ == "__main__":
    sys.exit(main())
