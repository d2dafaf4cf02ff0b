#!/usr/bin/env python3
"""Two builds of the replicator side by side on one guest: each attached in
turn (A, B, A, B, ...) to the same running guest and backup agent, its
pauses measured over a window like `bench.py checkpoint`'s. For a change
whose effect is smaller than the spread between runs on a loaded host.

  bench/ab_builds.py OLD_BINARY NEW_BINARY [--mem 256] [--rate 10]
                     [--rounds 4] [--seconds 8] [--args='--capture-threads 1']

The binaries take turns as build/bin/remus-replicator (renamed into place,
so a running one keeps its own); the build's own is put back at the end.
"""
import argparse
import os
import shutil
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the directory of this file, above)


def install(path, target):
    shutil.copy(path, target + ".ab")
    os.rename(target + ".ab", target)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--mem", type=int, default=256)
    ap.add_argument("--rate", type=int, default=10, help="the guest's dirtier, MB/s")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--args", default="", help="more arguments for both replicators")
    args = ap.parse_args()
    target = os.path.join(bench.BIN, "remus-replicator")
    own = target + ".own"
    shutil.copy(target, own)
    runs = {"A": [], "B": []}
    b = bench.Bench()
    try:
        run, _ = b.guest("ab", args.mem, "dirty_mb_s=%d dirty_mb=%d"
                         % (args.rate, min(64, args.mem // 4)))
        port = bench.free_port()
        b.agent(port, os.path.join(b.dir, "backup"))
        print("| round | build | pause p50 | capture p50 | capture p99 | stop p50 | resume p50 | "
              "dirty pages/epoch |")
        print("|---|---|---|---|---|---|---|---|")
        for i in range(args.rounds):
            for name, path in (("A", args.a), ("B", args.b)):
                install(path, target)
                p, sock = b.replicator(run, port, 50, extra=args.args.split())
                s = bench.measure_window(sock, args.seconds)
                bench.detach(p)
                runs[name].append(s)
                print("| %d | %s | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %.0f |" % (
                    i + 1, name, s["pause_p50_ms"], s["pause_capture_p50_ms"],
                    s["pause_capture_p99_ms"], s["pause_stop_p50_ms"],
                    s["pause_resume_p50_ms"], s["dirty_pages_per_epoch"]), flush=True)
    finally:
        b.close()
        install(own, target)
        os.unlink(own)
    med = {n: statistics.median(s["pause_p50_ms"] for s in v) for n, v in runs.items()}
    cap = {n: statistics.median(s["pause_capture_p50_ms"] for s in v) for n, v in runs.items()}
    print("\nmedian of the rounds: pause p50 A %.2f ms, B %.2f ms (B/A %.2f); capture p50 "
          "A %.2f ms, B %.2f ms" % (med["A"], med["B"], med["B"] / med["A"], cap["A"], cap["B"]))


if __name__ == "__main__":
    main()
