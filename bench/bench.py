#!/usr/bin/env python3
"""Replicator benchmarks on the bundled test guest (QEMU/TCG, loopback).

  bench/bench.py checkpoint [--mem 128,512] [--rates 0,25,50,100,200] [--seconds 10]
      pause time and checkpoint size per epoch against the guest's dirty rate
  bench/bench.py workrate [--epochs 25,50,100,200] [--policies hybrid] [--trackers auto]
          [--seconds 10]
      the guest's own work rate (an unthrottled memory writer) replicated at
      each epoch length against the same guest unreplicated, in one run
  bench/bench.py policies [--seconds 8]
      a set of workloads (idle, steady and bursty dirtier, unthrottled
      writer, requests) under fixed 25/50/100/200 ms epochs and the adaptive
      hybrid policy, side by side in one run
  bench/bench.py disk [--epochs 50,200] [--captures mirror,bitmap] [--seconds 15]
      the guest's disk write throughput and latency (random 4 KiB O_DIRECT
      writes, unthrottled) replicated at each epoch length with each disk
      capture (--disk-capture) against the same VM unreplicated, and, as a
      control, the VM only stopped and continued for 1 ms at each epoch
      length with no replicator, in one run
  bench/bench.py link [--mem 128] [--epoch-ms 50] [--repeat 2] [--seconds 10]
      the replication link with TLS and in cleartext, alternated on one
      guest in one run: time from attach to the first commit (all of RAM
      sent), the guest's work rate, pause and ack at a fixed epoch
  bench/bench.py trackers [--mem 128,512,1024,2048] [--rate 0] [--dirty-mb 4]
          [--seconds 10] [--runs soft-dirty:2,compare:2,compare:1]
      the pause against guest RAM size at one dirty rate over one working
      set, the same at every size (default: an unthrottled writer that
      dirties all of its 4 MiB in every epoch), for soft-dirty and for the compare
      tracker on 2 and 1 threads, side by side on the same running guest
      (each attaches, measures, detaches), then where each pause went;
      soft-dirty needs a kernel that keeps the log: bench/in-vm.sh runs this
      inside Debian's kernel (scripts/nested-vm)
  bench/bench.py resync [--mem 512] [--dirty-mbs 16,128] [--cut 10] [--disk-mb 64 [--disk-filled]]
                        [--state-under DIR]
      a delta resync against a full one: a guest (its RAM, a 64 MiB disk it
      writes 1 MiB/s to, a dirtier at 20 MiB/s over each working set) is
      protected (the first copy: full), then its replication link is cut for
      --cut seconds (rep0 down) and comes back: bytes and time to be
      protected again, against the full copy of the same VM in the same run,
      and how much of the disk the primary read for it (needs root:
      scripts/testnet); --disk-filled writes the whole image with data
      first, as a disk in use; --state-under DIR puts the backup's state
      dirs on another file system
  bench/bench.py compress [--links 1000,100] [--modes off,on,auto] [--seconds 8]
      bytes on the wire per epoch and the guest's work rate with compressed
      checkpoints (--compress) off, on and auto, over a replication link
      shaped to each rate (Mbit/s, tc tbf on the primary's end), for a
      dirtier and an unthrottled writer that change one byte per page, and a
      dirtier that rewrites whole pages with random bytes (the worst case);
      fixed 50 ms epochs (needs root: scripts/testnet)
  bench/bench.py redis [--policies hybrid] [--captures mirror,bitmap] [--seconds 8]
      redis-benchmark (Debian's redis-tools, in a client namespace) against
      a 256 MB guest running Redis with its AOF fsync'ed at every write
      (appendfsync always) on ext4 on virtio-blk: INCR and GET, 1 and 8
      connections, replicated with each policy and disk capture (output
      commit, disk replication) against the same guest unreplicated, in one run (needs
      root: scripts/testnet; redis-tools and e2fsprogs on the host)
  bench/bench.py verify [--mem 128,512] [--epoch-ms 50] [--rate 20] [--seconds 10]
      what `remusctl verify` adds to the pause: one guest per RAM size,
      dirtying --rate MB/s, replicated at fixed epochs; its pauses over a
      whole verify pass against the windows just before and after it
      without one, and the slices the pass hashed
  bench/bench.py network [--epochs 25,50,100] [--seconds 8]
      request latency and throughput through the VM's net buffer, replicated
      at each epoch length against unreplicated, in one run (needs root: it
      builds its network namespaces with scripts/testnet)

Prints markdown tables (docs/BENCHMARKS.md keeps them). Every process it
starts is stopped by pid; guests and replicas live in a temp dir in /dev/shm.
"""
import argparse
import glob
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bin")
GUEST = os.path.join(ROOT, "build", "guest")
# Seconds; a nested VM (scripts/nested-vm) needs far more than a host.
BOOT_TIMEOUT = float(os.environ.get("GUEST_BOOT_TIMEOUT", "60"))
WARMUP_TIMEOUT = float(os.environ.get("BENCH_WARMUP_TIMEOUT", "120"))
PEER_TIMEOUT_MS = 60000  # 'trackers': --timeout-ms of both sides
# BENCH_ACCEL=kvm, BENCH_SMP=N: the guests' accelerator and vCPUs
# (bench/in-vm.sh KVM=1 runs them under KVM in the nested VM).
ACCEL = os.environ.get("BENCH_ACCEL", "tcg")
SMP = os.environ.get("BENCH_SMP", "1")
# BENCH_CLEARTEXT=1: the link without TLS, where only the pauses are
# measured and TLS emulated by TCG would make every initial copy crawl.
CLEARTEXT = os.environ.get("BENCH_CLEARTEXT") == "1"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise RuntimeError("timed out waiting for " + what)


class Bench:
    """Owns a temp dir, the guests, agents and replicators it starts."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="remus-bench.", dir="/dev/shm")
        # the pair key of this run's agents and replicators (docs/SECURITY.md)
        self.key = os.path.join(self.dir, "pair.key")
        subprocess.run([os.path.join(BIN, "remusctl"), "keygen", self.key], check=True,
                       stdout=subprocess.DEVNULL)
        self.procs = []
        self.qemu_pids = []
        self.ram_files = []

    def close(self):
        # a run that failed says why: the daemons' last words, before the
        # directory goes (inside scripts/nested-vm it is lost with the VM)
        if sys.exc_info()[0] is not None:
            self.print_log_tails()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        # the guests, and any VM an agent restored under this run's directory
        restored = []
        for pidfile in glob.glob(os.path.join(self.dir, "*", "qemu.pid")):
            try:
                pid = int(open(pidfile).read().strip())
                if open("/proc/%d/comm" % pid).read().startswith("qemu-system"):
                    restored.append(pid)
            except (OSError, ValueError):
                pass
        for pid in self.qemu_pids + restored:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for f in self.ram_files:
            if os.path.exists(f):
                os.unlink(f)
        if os.environ.get("BENCH_KEEP") == "1":
            print("bench: logs kept in %s (BENCH_KEEP=1)" % self.dir, file=sys.stderr)
            return
        shutil.rmtree(self.dir, ignore_errors=True)

    def print_log_tails(self, lines=30):
        for log in sorted(glob.glob(os.path.join(self.dir, "*.log")) +
                          glob.glob(os.path.join(self.dir, "*", "serial.log"))):
            with open(log, "rb") as f:
                tail = f.read().decode(errors="replace").splitlines()[-lines:]
            print("bench: last lines of %s:" % log, file=sys.stderr)
            for line in tail:
                print("  " + line, file=sys.stderr)
        sys.stderr.flush()

    def guest(self, name, mem, append, extra=(), guest_dir=GUEST):
        run = os.path.join(self.dir, name)
        subprocess.run([os.path.join(ROOT, "scripts", "run-test-guest"), "--guest-dir", guest_dir,
                        "--name", name, "--run-dir", run, "--mem", str(mem),
                        "--append", append, "--daemonize", "--accel", ACCEL, "--smp", SMP] +
                       list(extra), check=True)
        self.ram_files.append("/dev/shm/remus-%s.ram" % name)
        with open(os.path.join(run, "qemu.pid")) as f:
            pid = int(f.read())
        self.qemu_pids.append(pid)
        serial = os.path.join(run, "serial.log")
        wait_for(lambda: b"guest: ready" in open(serial, "rb").read(), BOOT_TIMEOUT, "guest boot")
        return run, pid

    def dirtier_pair(self, name, mem, rate, epoch_ms):
        """A guest dirtying rate MB/s (over a quarter of its RAM, 64 MiB at
        most), an agent, and a replicator at fixed epoch_ms: its socket."""
        run, _ = self.guest(name, mem, "dirty_mb_s=%d dirty_mb=%d" % (rate, min(64, mem // 4)))
        port = free_port()
        self.agent(port, os.path.join(self.dir, "backup"))
        return self.replicator(run, port, epoch_ms)[1]

    def link_args(self):
        return ["--insecure-cleartext-link"] if CLEARTEXT else ["--key-file", self.key]

    def spawn(self, argv, log, env=None):
        p = subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                             env=dict(os.environ, **env) if env else None)
        self.procs.append(p)
        return p

    def agent(self, port, state, host="127.0.0.1", prefix=(), extra=()):
        return self.spawn(list(prefix) + [os.path.join(BIN, "remus-agent"), "--listen",
                          "%s:%d" % (host, port), "--state-dir", state] + self.link_args() +
                          list(extra),
                          os.path.join(self.dir, "agent.log"))

    def replicator(self, run, port, epoch_ms, extra=(), host="127.0.0.1", prefix=(), env=None):
        ctl = os.path.join(self.dir, "ctl.sock")
        p = self.spawn(list(prefix) + [os.path.join(BIN, "remus-replicator"), "--qmp",
                        os.path.join(run, "qmp.sock"), "--backup", "%s:%d" % (host, port),
                        "--epoch-policy", "fixed", "--epoch-ms", str(epoch_ms),
                        "--control", ctl] + self.link_args() + list(extra),
                       os.path.join(self.dir, "replicator.log"), env)
        return p, ctl


def ctl(sock, cmd):
    out = subprocess.run([os.path.join(BIN, "remusctl"), "--control", sock, "--json", cmd],
                         capture_output=True, text=True)
    if out.returncode:
        return None
    return json.loads(out.stdout) if cmd == "status" else True


def committed(sock, n):
    s = ctl(sock, "status")
    return s is not None and s["epochs_committed"] >= n


def detach(p):
    p.send_signal(signal.SIGTERM)
    p.wait(10)


def measure_window(sock, seconds):
    """Stats of the epochs in a window of `seconds`, after warm-up, plus the
    dirty rate the replicator actually saw (MB/s of host time)."""
    wait_for(lambda: committed(sock, 10), WARMUP_TIMEOUT, "10 committed epochs")
    ctl(sock, "reset-stats")
    t0, before = time.monotonic(), ctl(sock, "status")
    time.sleep(seconds)
    t1, after = time.monotonic(), ctl(sock, "status")
    if before is None or after is None:
        raise RuntimeError("the replicator stopped answering on %s" % sock)
    after["dirty_mb_s"] = ((after["dirty_pages_total"] - before["dirty_pages_total"]) * 4096
                           / (t1 - t0) / 1e6)
    epochs = after["epochs_committed"] - before["epochs_committed"]
    after["mean_epoch_ms"] = (t1 - t0) * 1000 / epochs if epochs else float("nan")
    if "softdirty_scans" in after:
        scans = max(1, after["softdirty_scans"] - before["softdirty_scans"])
        for k in ("flagged", "absent"):
            after["softdirty_%s_per_scan" % k] = (after["softdirty_%s_pages" % k]
                                                  - before["softdirty_%s_pages" % k]) / scans
        share = cleared_share(before, after)
        if share is not None:
            after["softdirty_cleared_share"] = share
    return after


def cleared_share(before, after):
    """Share of the soft-dirty scans between two status replies that
    cleared the log; None for another tracker or no scan."""
    if "softdirty_clears_skipped" not in after:
        return None
    scans = after["softdirty_scans"] - before["softdirty_scans"]
    if scans <= 0:
        return None
    return 1 - (after["softdirty_clears_skipped"] - before["softdirty_clears_skipped"]) / scans


def pause_window(sock, seconds=None, during=None):
    """Pause stats over `seconds`, or over the call during(), whose result
    comes back beside them."""
    ctl(sock, "reset-stats")
    before = ctl(sock, "status")
    got = during() if during else time.sleep(seconds)
    after = ctl(sock, "status")
    if before is None or after is None:
        raise RuntimeError("the replicator stopped answering on %s" % sock)
    after["epochs"] = after["epochs_committed"] - before["epochs_committed"]
    return after, got


def verify_pass(sock):
    out = subprocess.run([os.path.join(BIN, "remusctl"), "--control", sock, "--json", "verify"],
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError("remusctl verify: exit %d: %s" % (out.returncode, out.stderr))
    return json.loads(out.stdout)


def verify(args):
    """The pauses over one verify pass between two windows without one, on
    the same replicated guest: the pass hashes a slice of pages (then 4
    KiB disk blocks) at each pause, sized to stay well under 1 ms."""
    print("| guest RAM | window | epochs | pause p50 | pause p99 | pause max | pause p50 vs "
          "without | stop / capture / resume p50 | slices | slice hash mean / max (wall) | "
          "slice hash max (CPU) | pages compared |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rate = args.rate or 20
    for mem in args.mem:
        b = Bench()
        try:
            sock = b.dirtier_pair("verify", mem, rate, args.epoch_ms)
            wait_for(lambda: committed(sock, 20), WARMUP_TIMEOUT, "20 committed epochs")
            first, _ = pause_window(sock, args.seconds)
            during, v = pause_window(sock, during=lambda: verify_pass(sock))
            last, _ = pause_window(sock, args.seconds)
        finally:
            b.close()
        base = (first["pause_p50_ms"] + last["pause_p50_ms"]) / 2
        for name, s, vv in (("without", first, None), ("verify pass", during, v),
                            ("without (again)", last, None)):
            print("| %d MB | %s | %d | %.2f ms | %.2f ms | %.2f ms | %s | %.2f / %.2f / %.2f ms "
                  "| %s | %s | %s | %s |"
                  % (mem, name, s["epochs"], s["pause_p50_ms"], s["pause_p99_ms"],
                     s["pause_max_ms"],
                     "%+.2f ms" % (s["pause_p50_ms"] - base) if vv else "-",
                     s["pause_stop_p50_ms"], s["pause_capture_p50_ms"],
                     s["pause_resume_p50_ms"],
                     vv["slices"] if vv else "-",
                     "%.2f / %.2f ms" % (vv["slice_hash_ms_mean"], vv["slice_hash_ms_max"])
                     if vv else "-",
                     "%.2f ms" % vv["slice_hash_cpu_ms_max"] if vv else "-",
                     vv["pages_checked"] if vv else "-"), flush=True)


def checkpoint(args):
    print("| guest RAM | dirtier set to | dirty rate seen | dirty pages/epoch | checkpoint/epoch | "
          "pause p50 | pause p99 | pause max | capture p50 | ack p50 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mem in args.mem:
        for rate in args.rates:
            b = Bench()
            try:
                sock = b.dirtier_pair("bench", mem, rate, args.epoch_ms)
                s = measure_window(sock, args.seconds)
            finally:
                b.close()
            print("| %d MB | %d MB/s | %.0f MB/s | %.0f | %.0f KiB | %.2f ms | %.2f ms | %.2f ms | "
                  "%.2f ms | %.2f ms |"
                  % (mem, rate, s["dirty_mb_s"], s["dirty_pages_per_epoch"],
                     s["checkpoint_bytes_per_epoch"] / 1024,
                     s["pause_p50_ms"], s["pause_p99_ms"], s["pause_max_ms"],
                     s["pause_capture_p50_ms"], s["ack_p50_ms"]), flush=True)


# 'trackers' runs that are soft-dirty with a benchmark switch: -eager clears
# the log at every pause, as before lazy clearing; -read reads it by the
# pagemap read where the kernel has PAGEMAP_SCAN (docs/SOFT-DIRTY.md);
# hash-read-holes reads every page of guest RAM, holes too, as before the
# hash tracker skipped them (docs/TRACKERS.md, "Holes"): run it after hash,
# it allocates every hole
TRACKER_VARIANTS = {
    "soft-dirty-eager": ("soft-dirty", {"REMUS_BENCH_SOFTDIRTY_CLEAR_EVERY": "1"}),
    "soft-dirty-read": ("soft-dirty", {"REMUS_BENCH_SOFTDIRTY_PAGEMAP_READ": "1"}),
    "hash-read-holes": ("hash", {"REMUS_BENCH_HASH_READ_HOLES": "1"}),
}


def allocated_mb(path):
    """How much of a tmpfs file holds memory."""
    return os.stat(path).st_blocks * 512 / 2**20


def trackers(args):
    """One guest per RAM size; each tracker run attaches to it in turn. A
    row is printed as soon as its size is measured."""
    runs = args.runs
    head = ["guest RAM", "dirty pages/epoch"] + ["%s %d thread%s" % (k, t, "s" if t > 1 else "")
                                                 for k, t in runs]
    sd_run = next((r for r in runs if r[0] == "soft-dirty"), None)
    c1_run = next((r for r in runs if r == ("compare", 1)), None)
    print("| " + " | ".join(head) + " | soft-dirty / compare 1 thread | soft-dirty vs %d MB |"
          % args.mem[0])
    print("|" + "---|" * (len(head) + 2), flush=True)
    base, details = None, []
    for mem in args.mem:
        b = Bench()
        got = {}
        try:
            # --rate 0: an unthrottled writer sweeps the working set, so every
            # epoch dirties all of it, however fast the (nested) vCPU runs.
            writer = ("dirty_mb_s=%d dirty_mb=%d" % (args.rate, args.dirty_mb) if args.rate
                      else "work_mb=%d" % args.dirty_mb)
            run, _ = b.guest("bench", mem, writer)
            run_ram = b.ram_files[-1]
            ram_before = allocated_mb(run_ram)
            port = free_port()
            # compare's pauses at 1-2 GB in a nested guest last seconds, in
            # which the replicator's loop sends nothing: neither side may
            # take that for a dead peer, and the backup must never restore
            # a second copy of the guest beside the bench.
            b.agent(port, os.path.join(b.dir, "backup"),
                    extra=["--no-failover", "--timeout-ms", str(PEER_TIMEOUT_MS)])
            for kind, threads in runs:
                tracker, env = TRACKER_VARIANTS.get(kind, (kind, None))
                p, sock = b.replicator(run, port, args.epoch_ms,
                                       ["--tracker", tracker,
                                        "--capture-threads", str(threads),
                                        "--timeout-ms", str(PEER_TIMEOUT_MS)], env=env)
                try:
                    wait_for(lambda: p.poll() is not None or ctl(sock, "status") is not None,
                             WARMUP_TIMEOUT, "the replicator's control socket")
                    if p.poll() is not None:
                        with open(os.path.join(b.dir, "replicator.log"), "rb") as f:
                            last = f.read().decode(errors="replace").strip().splitlines()[-1:]
                        raise RuntimeError("replicator exited: %s" % " ".join(last))
                    s = measure_window(sock, args.seconds)
                    s["ram_allocated_mb"] = allocated_mb(run_ram)
                    s["hole_pages"] = (ctl(sock, "status") or {}).get("hash_hole_pages", 0)
                    if s["tracker"] != tracker:
                        raise RuntimeError("asked for %s, got %s" % (kind, s["tracker"]))
                    got[kind, threads] = s
                except RuntimeError as e:
                    with open(os.path.join(b.dir, "replicator.log"), "rb") as f:
                        last = f.read().decode(errors="replace").strip().splitlines()[-3:]
                    print("<!-- %d MB %s x%d: %s; the replicator's last words: %s -->"
                          % (mem, kind, threads, e, " / ".join(last)), flush=True)
                if p.poll() is None:
                    detach(p)
                time.sleep(1)
        finally:
            b.close()
        cells = [got.get(r) for r in runs]
        sd, c1 = got.get(sd_run), got.get(c1_run)
        if base is None and sd:
            base = sd
        dirty = " / ".join("%.0f" % s["dirty_pages_per_epoch"] if s else "-" for s in cells)
        ratio = "%.3f" % (sd["pause_p50_ms"] / c1["pause_p50_ms"]) if sd and c1 else "-"
        scale = "%.2f" % (sd["pause_p50_ms"] / base["pause_p50_ms"]) if sd and base else "-"
        print("| %d MB | %s | %s | %s | %s |" % (
            mem, dirty, " | ".join("%.2f / %.2f" % (s["pause_p50_ms"], s["pause_p99_ms"]) if s else "-"
                                   for s in cells), ratio, scale), flush=True)
        details += [(mem, r, got[r], ram_before) for r in runs if r in got]
    print("\nWhere the pauses went (p50, ms), and what soft-dirty compared per pause "
          "(pages it flagged / pages not in QEMU's page tables):\n")
    print("| guest RAM | tracker | pause | QMP stop | capture | QMP cont | mean epoch "
          "| dirty pages/epoch | compared per pause | pauses that cleared the log | log read by "
          "| RAM file allocated: before the first run / after this one | pages skipped as holes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for mem, (kind, threads), s, ram_before in details:
        sd = ("%.0f / %.0f" % (s["softdirty_flagged_per_scan"], s["softdirty_absent_per_scan"])
              if "softdirty_flagged_per_scan" in s else
              "%d of %d (the rest holes)" % (mem * 256 - s["hole_pages"], mem * 256)
              if s.get("hole_pages") else "all %d" % (mem * 256))
        cleared = ("%.0f%%" % (100 * s["softdirty_cleared_share"])
                   if "softdirty_cleared_share" in s else "-")
        print("| %d MB | %s %d | %.2f | %.2f | %.2f | %.2f | %.0f ms | %.0f | %s | %s | %s "
              "| %.0f / %.0f MB | %d |" % (
                  mem, kind, threads, s["pause_p50_ms"], s["pause_stop_p50_ms"],
                  s["pause_capture_p50_ms"], s["pause_resume_p50_ms"], s["mean_epoch_ms"],
                  s["dirty_pages_per_epoch"], sd, cleared, s.get("softdirty_log_read", "-"),
                  ram_before, s["ram_allocated_mb"], s["hole_pages"]), flush=True)


# Whole lines only: the guest may be writing the last one as it is read,
# and "work total=17" cut from "work total=1755555" would count backwards.
WORK_RE = re.compile(rb"work total=(\d+)\r?\n")


def work_total(serial):
    with open(serial, "rb") as f:
        f.seek(max(0, os.path.getsize(serial) - 65536))
        found = WORK_RE.findall(f.read())
    return int(found[-1]) if found else None


def work_rate(serial, seconds):
    """Pages per second of host time: the guest's clock stops while paused.
    0 when the work loop has stopped reporting (only other lines since)."""
    t0, w0 = time.monotonic(), work_total(serial)
    time.sleep(seconds)
    t1, w1 = time.monotonic(), work_total(serial)
    if w0 is None or w1 is None:
        return 0.0
    return (w1 - w0) / (t1 - t0)


def workrate(args):
    """Each replicated window between two unreplicated ones of the same
    guest, and its ratio against their mean: a nested guest's own speed
    drifts by tens of percent over a run (TCG's code cache, the host's
    other work), so one baseline at each end of the run says little
    about the windows in the middle."""
    b = Bench()
    rows = []
    try:
        run, _ = b.guest("work", args.mem[0], "work_mb=%d" % args.work_mb)
        serial = os.path.join(run, "serial.log")
        wait_for(lambda: work_total(serial) is not None, 30, "the work loop")
        time.sleep(2)
        port = free_port()
        b.agent(port, os.path.join(b.dir, "backup"))
        rows.append(("unreplicated", work_rate(serial, args.seconds), None))
        # fixed epochs, then any --policies (e.g. hybrid), each in turn,
        # with each of --trackers
        for e, kind in [(e, k) for e in args.epochs + args.policies for k in args.trackers]:
            tracker, env = TRACKER_VARIANTS.get(kind, (kind, None))
            extra = ["--tracker", tracker]
            if isinstance(e, str):
                p, sock = b.replicator(run, port, 50, ["--epoch-policy", e] + extra, env=env)
                name = "policy " + e
            else:
                p, sock = b.replicator(run, port, e, extra, env=env)
                name = "epoch %d ms" % e
            if len(args.trackers) > 1:
                name += ", " + kind
            wait_for(lambda: committed(sock, 10), WARMUP_TIMEOUT, "10 committed epochs")
            ctl(sock, "reset-stats")
            t0, before = time.monotonic(), ctl(sock, "status")
            rate = work_rate(serial, args.seconds)
            after = ctl(sock, "status")
            epochs = after["epochs_committed"] - before["epochs_committed"]
            after["mean_epoch_ms"] = ((time.monotonic() - t0) * 1000 / epochs if epochs
                                      else float("nan"))
            share = cleared_share(before, after)
            after["cleared"] = "-" if share is None else "%.2f" % share
            if isinstance(e, str):
                print("bench: %s: %s (vCPUs %.0f%% busy)" % (name, after["epoch_reason"],
                      after["vcpu_busy_pct"]), file=sys.stderr, flush=True)
            if not rate:
                print("bench: %s: the guest did no work" % name, file=sys.stderr)
                b.print_log_tails()
            rows.append((name, rate, after))
            detach(p)
            time.sleep(1)
            rows.append(("unreplicated", work_rate(serial, args.seconds), None))
    finally:
        b.close()
    print("| run | guest work (page writes/s) | vs the unreplicated windows on each side | "
          "pause p50 | pause p99 | mean epoch (pause to pause) | dirty pages/epoch | link MB/s | "
          "soft-dirty scans that cleared the log |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, (name, rate, s) in enumerate(rows):
        if not s:
            print("| %s | %.0f | - | - | - | - | - | - | - |" % (name, rate))
            continue
        base = (rows[i - 1][1] + rows[i + 1][1]) / 2
        print("| %s | %.0f | %s | %.2f ms | %.2f ms | %.1f ms | %.0f | %.1f | %s |" % (
              name, rate, "%.2f" % (rate / base) if base > 0 else "-",
              s["pause_p50_ms"], s["pause_p99_ms"],
              s["mean_epoch_ms"], s["dirty_pages_per_epoch"], s["link_bytes_per_s"] / 1e6,
              s["cleared"]))


def link(args):
    """The replication link with TLS and in cleartext, side by side in one
    run on one guest (its work loop dirtying args.work_mb), alternated so
    that drift hits both: time to sync all of RAM (throughput), then at a
    fixed epoch the guest's work rate, pause and ack."""
    b = Bench()
    rows = []
    try:
        run, _ = b.guest("link", args.mem[0], "work_mb=%d" % args.work_mb)
        serial = os.path.join(run, "serial.log")
        wait_for(lambda: work_total(serial) is not None, 30, "the work loop")
        time.sleep(2)
        rows.append(("unreplicated", None, work_rate(serial, args.seconds), None))
        for i in range(args.repeat):
            for mode, extra in (("TLS", ()), ("cleartext", ("--insecure-cleartext-link",))):
                port = free_port()
                # --no-failover: a detach whose GOODBYE came late must not
                # leave a restored VM eating the CPU of the next rows
                b.agent(port, os.path.join(b.dir, "backup-%s-%d" % (mode, i)),
                        extra=extra + ("--no-failover", "--no-fence"))
                t0 = time.monotonic()
                p, sock = b.replicator(run, port, args.epoch_ms, extra=extra)
                wait_for(lambda: committed(sock, 1), 120, "the initial sync")
                sync_s = time.monotonic() - t0
                wait_for(lambda: committed(sock, 10), 120, "10 committed epochs")
                ctl(sock, "reset-stats")
                rate = work_rate(serial, args.seconds)
                rows.append((mode, sync_s, rate, ctl(sock, "status")))
                detach(p)
                time.sleep(1)
        rows.append(("unreplicated (again)", None, work_rate(serial, args.seconds), None))
    finally:
        b.close()
    base = (rows[0][2] + rows[-1][2]) / 2
    print("| run | attach to first commit (%d MB RAM) | guest work (page writes/s) | vs "
          "unreplicated | pause p50 | pause p99 | ack p50 | ack p99 | checkpoint/epoch | "
          "link MB/s |" % args.mem[0])
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, sync_s, rate, s in rows:
        extra = ("%.2f ms | %.2f ms | %.2f ms | %.2f ms | %.0f KiB | %.1f" % (
            s["pause_p50_ms"], s["pause_p99_ms"], s["ack_p50_ms"], s["ack_p99_ms"],
            s["checkpoint_bytes_per_epoch"] / 1024, s["link_bytes_per_s"] / 1e6)) if s else \
            "- | - | - | - | - | -"
        print("| %s | %s | %.0f | %.2f | %s |" % (name, "%.1f s" % sync_s if sync_s else "-",
                                                 rate, rate / base, extra), flush=True)


DISKW_RE = re.compile(rb"diskw: writes=(\d+) mb_s=([\d.]+) lat_p50_us=(\d+) lat_p99_us=(\d+) "
                      rb"lat_max_us=(\d+)")


def diskw_lines(serial):
    with open(serial, "rb") as f:
        return DISKW_RE.findall(f.read())


def next_disk_report(serial):
    """Waits for the guest's next whole disk report line; the host time it
    appeared (polled every 10 ms, reading only what the log gained) and
    how many reports there are then."""
    with open(serial, "rb") as f:
        data = f.read()
        upto = data.rfind(b"\n") + 1
        seen = len(DISKW_RE.findall(data[:upto]))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            f.seek(upto)
            more = f.read()
            whole = more.rfind(b"\n") + 1
            if DISKW_RE.search(more[:whole]):
                return time.monotonic(), seen + len(DISKW_RE.findall(more[:whole]))
            upto += whole
            time.sleep(0.01)
    raise RuntimeError("timed out waiting for a disk report")


def disk_window(serial, seconds):
    """Writes per second of host time from one of the guest's reports
    (every 5 s of guest time) to the first one that appears after
    `seconds`, and the worst p50/p99 the guest measured in them. Both ends
    are report arrivals, so the writes counted are exactly those of the
    host time measured: a window that ended at the sleep instead counted
    one report fewer whenever the guest's clock ran a little slow (paused
    VMs: its clock stands still meanwhile), half the writes of a 10 s
    window. The guest's latencies leave the pauses out; throughput is per
    host second and does not."""
    t0, start = next_disk_report(serial)
    time.sleep(seconds)
    t1, end = next_disk_report(serial)
    lines = diskw_lines(serial)[start:end]
    writes = sum(int(l[0]) for l in lines)
    p50 = max(int(l[2]) for l in lines)
    p99 = max(int(l[3]) for l in lines)
    return writes / (t1 - t0), p50, p99


class Pauser:
    """Stops and continues a VM over its QMP socket every `every_ms`, for
    `pause_ms` each time, in a thread: what the pauses alone cost a
    workload, with no replicator (a control row)."""

    def __init__(self, qmp_path, every_ms, pause_ms):
        import threading
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(qmp_path)
        self.f = self.sock.makefile("rw")
        self.f.readline()
        self.cmd("qmp_capabilities")
        self.every, self.pause, self.done = every_ms / 1000.0, pause_ms / 1000.0, False
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def cmd(self, name):
        self.f.write(json.dumps({"execute": name}) + "\n")
        self.f.flush()
        while "return" not in json.loads(self.f.readline()):
            pass

    def run(self):
        while not self.done:
            time.sleep(self.every)
            self.cmd("stop")
            time.sleep(self.pause)
            self.cmd("cont")

    def close(self):
        self.done = True
        self.thread.join()
        self.f.close()  # the socket stays open while its file object is
        self.sock.close()


def cpu_seconds(*pids):
    """user + system CPU time of these processes (all their threads)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def disk(args):
    b = Bench()
    rows = []
    try:
        img = os.path.join(b.dir, "disk.img")
        run, qemu = b.guest("disk", args.mem[0], "disk_write_mb_s=max", ["--disk", img])
        serial = os.path.join(run, "serial.log")
        port = free_port()
        agent = b.agent(port, os.path.join(b.dir, "backup"), extra=["--no-fence"])

        def window(pids):
            """disk_window, and the CPU share (of one core) QEMU and the
            daemons took in it."""
            c0, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
            res = disk_window(serial, args.seconds)
            c1, t1 = [cpu_seconds(p) for p in pids], time.monotonic()
            return res + (tuple((b1 - a1) / (t1 - t0) for a1, b1 in zip(c0, c1)),)

        # Every measured window sits between two unreplicated ones of the
        # same guest and is compared with their mean: this guest's own
        # rate drifts by up to 2x over minutes on a shared host.
        rows.append(("unreplicated",) + window([qemu]) + (None,))
        for _ in range(args.repeat):
            for e in args.epochs:
                pauser = Pauser(os.path.join(run, "qmp.sock"), e, 1)
                try:
                    rows.append(("no replicator: VM stopped 1 ms every %d ms" % e,) +
                                window([qemu]) + (None,))
                finally:
                    pauser.close()
                rows.append(("unreplicated",) + window([qemu]) + (None,))
                for how in args.captures:
                    p, sock = b.replicator(run, port, e, ["--disk-capture", how])
                    wait_for(lambda: committed(sock, 10), 120, "10 committed epochs")
                    ctl(sock, "reset-stats")
                    rows.append(("epoch %d ms, %s" % (e, how),) +
                                window([qemu, p.pid, agent.pid]) + (ctl(sock, "status"),))
                    detach(p)
                    time.sleep(1)
                    rows.append(("unreplicated",) + window([qemu]) + (None,))
    finally:
        b.close()
    print("| run | 4 KiB writes/s (host time) | vs the unreplicated windows on each side | "
          "write latency p50 / p99 (guest clock) | pause p50 / p99 | capture p50 | "
          "epochs ended early (disk cap) | CPU: QEMU / replicator / agent (cores) |")
    print("|---|---|---|---|---|---|---|---|")
    ratios = {}
    for i, (name, rate, p50, p99, cpu, s) in enumerate(rows):
        extra = ("%.1f / %.1f ms | %.1f ms | %d" % (s["pause_p50_ms"], s["pause_p99_ms"],
                 s["pause_capture_p50_ms"], s.get("disk_early_epochs", 0))) if s else "- | - | -"
        vs = "-"
        if name != "unreplicated":
            ratio = rate / ((rows[i - 1][1] + rows[i + 1][1]) / 2)
            ratios.setdefault(name, []).append(ratio)
            vs = "%.2f" % ratio
        print("| %s | %.0f | %s | %.0f / %.0f us | %s | %s |" % (
            name, rate, vs, p50, p99, extra, " / ".join("%.2f" % c for c in cpu)))
    if args.repeat > 1:
        print()
        print("| run | vs the unreplicated windows on each side: median (each) |")
        print("|---|---|")
        for name, rs in ratios.items():
            print("| %s | %.2f (%s) |" % (name, statistics.median(rs),
                                          ", ".join("%.2f" % r for r in rs)))


TESTNET = os.path.join(ROOT, "scripts", "testnet")


def testnet_env(prefix):
    out = subprocess.run([TESTNET, "env", prefix],
                         check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.split() if "=" in line)


def testnet_up(tag):
    """scripts/testnet up TAG+pid: its prefix and its environment (quotes
    stripped). Taken down again if the environment cannot be read."""
    prefix = "%s%d" % (tag, os.getpid() % 10000)
    subprocess.run([TESTNET, "up", prefix], check=True, stdout=subprocess.DEVNULL)
    try:
        return prefix, {k: v.strip("'\"") for k, v in testnet_env(prefix).items()}
    except BaseException:
        testnet_down(prefix)
        raise


def testnet_down(prefix):
    subprocess.run([TESTNET, "down", prefix], stdout=subprocess.DEVNULL)


def requests(ns, ip, seconds, conns):
    out = subprocess.run([os.path.join(ROOT, "scripts", "in-netns"), ns, sys.executable,
                          os.path.join(ROOT, "bench", "req_client.py"), ip, "7777",
                          str(seconds), str(conns)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def network(args):
    prefix, env = testnet_up("rb")
    b = Bench()
    rows = []
    try:
        pri, bak, cli = ([os.path.join(ROOT, "scripts", "in-netns"), env[k]] for k in ("PRI_NS", "BAK_NS", "CLI_NS"))
        run, _ = b.guest("net", args.mem[0], "ip_addr=%s/24" % env["VM_IP"],
                         ["--net", "--netns", env["PRI_NS"]])
        port = 7700
        b.agent(port, os.path.join(b.dir, "backup"), env["BACKUP_ADDR"], bak,
                ["--tap", "n0=" + env["BAK_TAP"]])
        net_out = ["--net-out", "n0=packet:" + env["PRI_LAN_IF"]]

        def measure(name, p, sock):
            # pause and ack of the 1-connection run, which the latency meets
            if sock:
                ctl(sock, "reset-stats")
            lat = requests(env["CLI_NS"], env["VM_IP"], args.seconds, 1)
            s = ctl(sock, "status") if sock else None
            tput = requests(env["CLI_NS"], env["VM_IP"], args.seconds, 8)
            rows.append((name, lat, tput, s))
            p.send_signal(signal.SIGTERM)
            p.wait(10)
            time.sleep(1)

        # Unreplicated: the same forwarder with no backup to wait for (a port
        # nobody listens on): output goes out at once.
        for e in [None] + args.epochs + args.policies + [None]:
            if isinstance(e, str):
                p, sock = b.replicator(run, port, 50, net_out + ["--epoch-policy", e],
                                       env["BACKUP_ADDR"], pri)
                wait_for(lambda: committed(sock, 10), 120, "10 committed epochs")
                measure("policy " + e, p, sock)
            elif e is None:
                p, sock = b.replicator(run, 1, 50, net_out, env["BACKUP_ADDR"], pri)
                time.sleep(2)
                measure("unreplicated" + (" (again)" if rows else ""), p, None)
            else:
                p, sock = b.replicator(run, port, e, net_out, env["BACKUP_ADDR"], pri)
                wait_for(lambda: committed(sock, 10), 120, "10 committed epochs")
                measure("epoch %d ms" % e, p, sock)
    finally:
        b.close()
        testnet_down(prefix)
    base = (rows[0][2]["requests_per_s"] + rows[-1][2]["requests_per_s"]) / 2
    # The floor a reply can reach: one pause and one ack (issue: latency
    # p50 at most pause p50 + ack p50 + 3 ms), both of the latency run.
    print("| run | latency p50 | latency p99 | throughput (8 conns) | vs unreplicated | "
          "buffer delay p50 | buffer delay p99 | pause p50 / p99 | ack p50 | "
          "latency p50 - (pause p50 + ack p50) | vCPUs busy |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, lat, tput, s in rows:
        net = s["net"][0] if s else None
        print("| %s | %.2f ms | %.2f ms | %.0f req/s | %.2f | %s | %s | %s | %s | %s | %s |" % (
            name, lat["p50_ms"], lat["p99_ms"], tput["requests_per_s"], tput["requests_per_s"] / base,
            "%.1f ms" % net["delay_p50_ms"] if net else "-", "%.1f ms" % net["delay_p99_ms"] if net else "-",
            "%.1f / %.1f ms" % (s["pause_p50_ms"], s["pause_p99_ms"]) if s else "-",
            "%.1f ms" % s["ack_p50_ms"] if s else "-",
            "%+.1f ms" % (lat["p50_ms"] - s["pause_p50_ms"] - s["ack_p50_ms"]) if s else "-",
            "%.0f%%" % s["vcpu_busy_pct"] if s and "vcpu_busy_pct" in s else "-"))


REDIS_SERVER = "/usr/bin/redis-check-rdb"  # Debian's redis-server is this binary
REDIS_SCRIPT = """#!/bin/sh
# Redis with its append-only file fsync'ed at every write, on ext4 on the
# guest's virtio-blk disk (added by bench/bench.py redis).
mkfs.ext4 -q -F /dev/vda && mkdir -p /data && mount -t ext4 /dev/vda /data || {
    echo "guest: redis: no ext4 on /dev/vda"; exit 1; }
exec /usr/bin/redis-server --bind 0.0.0.0 --port 6379 --protected-mode no \\
    --appendonly yes --appendfsync always --save '' --dir /data \\
    --logfile /data/redis.log
"""


def copy_with_libs(exe, root, name):
    """exe into root as name, with the shared libraries ldd names."""
    dst = os.path.join(root, name.lstrip("/"))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy(exe, dst)
    out = subprocess.run(["ldd", exe], check=True, capture_output=True, text=True).stdout
    for lib in re.findall(r"(/\S+\.so[.\d]*)", out):
        real = os.path.join(root, lib.lstrip("/"))
        os.makedirs(os.path.dirname(real), exist_ok=True)
        shutil.copy(lib, real)


def redis_guest(b):
    """A guest dir: the test guest's kernel, its initrd with a second cpio
    appended (Redis, mkfs.ext4 and their libraries, /etc/guest.d/redis)."""
    for exe in (REDIS_SERVER, "/usr/bin/redis-benchmark", "/sbin/mkfs.ext4"):
        if not os.access(exe, os.X_OK):
            sys.exit("bench: %s missing (apt install redis-tools e2fsprogs)" % exe)
    root = os.path.join(b.dir, "redis-root")
    copy_with_libs(REDIS_SERVER, root, "/usr/bin/redis-server")
    copy_with_libs("/sbin/mkfs.ext4", root, "/sbin/mkfs.ext4")
    os.makedirs(os.path.join(root, "etc", "guest.d"))
    script = os.path.join(root, "etc", "guest.d", "redis")
    with open(script, "w") as f:
        f.write(REDIS_SCRIPT)
    os.chmod(script, 0o755)
    gdir = os.path.join(b.dir, "redis-guest")
    os.makedirs(gdir)
    os.symlink(os.path.join(GUEST, "vmlinuz"), os.path.join(gdir, "vmlinuz"))
    files = subprocess.run(["find", ".", "-mindepth", "1"], cwd=root, check=True,
                           capture_output=True).stdout
    overlay = subprocess.run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"], cwd=root,
                             input=files, check=True, capture_output=True).stdout
    with open(os.path.join(gdir, "initrd.img"), "wb") as f:
        f.write(open(os.path.join(GUEST, "initrd.img"), "rb").read())
        f.write(subprocess.run(["gzip", "-6"], input=overlay, check=True,
                               capture_output=True).stdout)
    return gdir


def redis_benchmark(ns, ip, test, conns, seconds):
    """redis-benchmark in the client namespace for about `seconds`: a short
    probe sizes the request count. Its CSV row as a dict (rps, p50, p99)."""
    def run(n):
        out = subprocess.run([os.path.join(ROOT, "scripts", "in-netns"), ns, "redis-benchmark",
                              "-h", ip, "-p", "6379", "-c", str(conns), "-n", str(n), "-t", test,
                              "--csv"], check=True, capture_output=True, text=True,
                             timeout=seconds * 10 + 60).stdout
        rows = [l.replace('"', "").split(",") for l in out.strip().splitlines()]
        head, vals = rows[0], rows[-1]
        return {k: (float(v) if k != "test" else v) for k, v in zip(head, vals)}
    probe = run(max(20, conns * 5))
    n = int(min(200000, max(50, probe["rps"] * seconds)))
    return run(n)


def redis(args):
    """redis-benchmark against a replicated guest running Redis (AOF,
    appendfsync always, ext4 on virtio-blk) and the same guest unreplicated."""
    prefix, env = testnet_up("rd")
    b = Bench()
    rows = []
    try:
        run, _ = b.guest("redis", args.mem[0], "ip_addr=%s/24" % env["VM_IP"],
                         ["--net", "--netns", env["PRI_NS"], "--disk",
                          os.path.join(b.dir, "redis.img")], redis_guest(b))
        cli = [os.path.join(ROOT, "scripts", "in-netns"), env["CLI_NS"]]
        pri, bak = ([os.path.join(ROOT, "scripts", "in-netns"), env[k]] for k in ("PRI_NS", "BAK_NS"))
        port = 7700
        b.agent(port, os.path.join(b.dir, "backup"), env["BACKUP_ADDR"], bak,
                ["--tap", "n0=" + env["BAK_TAP"], "--no-fence"])
        net_out = ["--net-out", "n0=packet:" + env["PRI_LAN_IF"]]

        def measure(name, p, sock):
            # the replicator forwards the VM's traffic: Redis answers once it runs
            wait_for(lambda: subprocess.run(cli + ["redis-cli", "-h", env["VM_IP"], "ping"],
                                            capture_output=True, text=True,
                                            timeout=30).stdout.strip() == "PONG",
                     120, "Redis in the guest (%s)" % os.path.join(run, "serial.log"))
            res = {}
            for test in ("incr", "get"):
                if sock:
                    ctl(sock, "reset-stats")
                before = ctl(sock, "status") if sock else None
                res[test, 1] = redis_benchmark(env["CLI_NS"], env["VM_IP"], test, 1, args.seconds)
                res[test, "status"] = ctl(sock, "status") if sock else None
                res[test, 8] = redis_benchmark(env["CLI_NS"], env["VM_IP"], test, 8, args.seconds)
                after = ctl(sock, "status") if sock else None
                # epochs a busy VM's replies prolonged, of those committed, per run
                res[test, "waits"] = [(b["reply_waits"] - a["reply_waits"],
                                       b["epochs_committed"] - a["epochs_committed"])
                                      for a, b in ((before, res[test, "status"]),
                                                   (res[test, "status"], after))] if sock else None
            rows.append((name, res))
            p.send_signal(signal.SIGTERM)
            p.wait(10)
            time.sleep(1)

        for policy in [None] + args.policies + [None]:
            if policy is None:  # the same forwarder, no backup to wait for
                p, sock = b.replicator(run, 1, 50, net_out, env["BACKUP_ADDR"], pri)
                time.sleep(2)
                measure("unreplicated" + (" (again)" if rows else ""), p, None)
            else:
                for how in args.captures:
                    p, sock = b.replicator(run, port, 50, net_out + ["--epoch-policy", policy,
                                           "--disk-capture", how], env["BACKUP_ADDR"], pri)
                    wait_for(lambda: committed(sock, 10), 300, "10 committed epochs")
                    measure("replicated, %s, disk %s" % (policy, how), p, sock)
    finally:
        b.close()
        testnet_down(prefix)
    print("| run | test | 1 conn: p50 / p99 | 1 conn: req/s | 8 conns: req/s | 8 conns vs "
          "unreplicated | pause p50 / ack p50 | p50 - (pause p50 + ack p50) | "
          "pause: stop / capture / resume p50 | tracker | epochs prolonged (vCPUs busy): 1 / 8 conns |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for test in ("incr", "get"):
        base = (rows[0][1][test, 8]["rps"] + rows[-1][1][test, 8]["rps"]) / 2
        for name, res in rows:
            one, eight, s = res[test, 1], res[test, 8], res[test, "status"]
            print("| %s | %s | %.2f / %.2f ms | %.0f | %.0f | %.2f | %s | %s | %s | %s | %s |" % (
                name, test.upper(), one["p50_latency_ms"], one["p99_latency_ms"], one["rps"],
                eight["rps"], eight["rps"] / base,
                "%.1f / %.1f ms" % (s["pause_p50_ms"], s["ack_p50_ms"]) if s else "-",
                "%+.1f ms" % (one["p50_latency_ms"] - s["pause_p50_ms"] - s["ack_p50_ms"])
                if s else "-",
                "%.1f / %.1f / %.1f ms" % (s["pause_stop_p50_ms"], s["pause_capture_p50_ms"],
                                           s["pause_resume_p50_ms"]) if s else "-",
                s.get("tracker", "-") if s else "-",
                " / ".join("%d of %d" % w for w in res[test, "waits"]) if s else "-"))


def hook_events(path):
    """The notify hook's lines: (event, unix ms, {REMUS_*})."""
    out = []
    try:
        for line in open(path):
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2 and parts[1].isdigit():
                out.append((parts[0], int(parts[1]),
                            dict(p.split("=", 1) for p in parts[2:] if "=" in p)))
    except OSError:
        pass
    return out


def resync(args):
    """Resync after a link cut, delta against full, side by side per guest."""
    prefix, env = testnet_up("rs")
    b = Bench()
    rows = []
    try:
        pri, bak = ([os.path.join(ROOT, "scripts", "in-netns"), env[k]] for k in ("PRI_NS", "BAK_NS"))
        hook = os.path.join(b.dir, "notify")
        with open(hook, "w") as f:
            f.write("#!/bin/sh\nprintf '%s\\t%s\\t%s\\n' \"$3\" \"$(date +%s%3N)\" "
                    "\"$(env | grep '^REMUS_' | tr '\\n' '\\t')\" >> \"$0.log\"\n")
        os.chmod(hook, 0o755)
        for i, dirty_mb in enumerate(args.dirty_mbs):
            name = "resync%d" % i
            img = os.path.join(b.dir, name + ".img")
            with open(img, "wb") as f:
                f.truncate(args.disk_mb << 20)
            if args.disk_filled:
                subprocess.run(["dd", "if=/dev/urandom", "of=" + img, "bs=1M",
                                "count=%d" % args.disk_mb, "conv=notrunc", "status=none"],
                               check=True)
            run, _ = b.guest(name, args.mem[0], "dirty_mb_s=20 dirty_mb=%d disk_write_mb_s=1" %
                             dirty_mb, ["--disk", img])
            port = 7700 + i
            state = os.path.join(args.state_under or b.dir, "backup%d" % i)
            b.agent(port, state, env["BACKUP_ADDR"], bak, ["--no-failover", "--no-fence"])
            log = hook + ".log"
            seen = len([e for e in hook_events(log) if e[0] == "protected"])
            t0 = time.time() * 1000
            p, sock = b.replicator(run, port, 50, ["--notify", hook, "--epoch-policy", "hybrid"],
                                   env["BACKUP_ADDR"], pri)
            wait_for(lambda: len([e for e in hook_events(log) if e[0] == "protected"]) > seen,
                     300, "the first protection")
            full = [e for e in hook_events(log) if e[0] == "protected"][seen]
            time.sleep(5)
            subprocess.run(pri + ["ip", "link", "set", "rep0", "down"], check=True)
            cut_at = time.time() * 1000
            time.sleep(args.cut)
            subprocess.run(pri + ["ip", "link", "set", "rep0", "up"], check=True)
            up_at = time.time() * 1000
            wait_for(lambda: len([e for e in hook_events(log) if e[0] == "protected"]) > seen + 1,
                     300, "protection again after the cut")
            again = [e for e in hook_events(log) if e[0] == "protected"][seen + 1]
            # what the primary read of the disk for the resync: the chunks
            # written since (resumed), or what the mirror copied (compared)
            disk = ctl(sock, "status")["disks"][0]
            read = (disk.get("resume_read_bytes", 0), "resumed") if disk.get(
                "resume_read_bytes", 0) else (disk["resync_copied_bytes"], "compared")
            rows.append((dirty_mb, int(full[2]["REMUS_SYNC_BYTES"]), full[1] - t0,
                         int(again[2]["REMUS_SYNC_BYTES"]), again[1] - up_at, again[1] - cut_at,
                         read))
            detach(p)
            time.sleep(1)
    finally:
        b.close()
        testnet_down(prefix)
    print("| guest | dirtier working set | full copy (first protection) | resync after a %d s "
          "cut | bytes vs full | disk read on the primary for the resync | link back -> "
          "protected | cut -> protected |" % args.cut)
    print("|---|---|---|---|---|---|---|---|")
    for dirty_mb, fb, fms, db, dms, cms, (rb, how) in rows:
        print("| %d MiB RAM + %d MiB disk%s, 20 MiB/s dirtied, disk written 1 MiB/s | %d MiB | "
              "%.1f MB in %.1f s (from attach) | %.1f MB | %.2f | %.1f MiB (%s) | %.1f s | "
              "%.1f s |" % (
              args.mem[0], args.disk_mb, " (filled)" if args.disk_filled else "", dirty_mb,
              fb / 1e6, fms / 1000, db / 1e6, db / fb, rb / 1048576, how, dms / 1000,
              cms / 1000), flush=True)


COMPRESS_WORKLOADS = [
    # name, kernel arguments
    ("dirtier 20 MiB/s, 1 byte per page", "dirty_mb_s=20 dirty_mb=32"),
    ("unthrottled writer, 1 byte per page", "work_mb=32"),
    ("dirtier 5 MiB/s, whole random pages", "dirty_mb_s=5 dirty_mb=32 dirty_fill=random"),
]


def shape(ns_cmd, mbit):
    """The primary's end of the replication link, rep0, at mbit Mbit/s
    (its egress: what the checkpoints cross); 0: unshaped."""
    subprocess.run(ns_cmd + ["tc", "qdisc", "del", "dev", "rep0", "root"],
                   stderr=subprocess.DEVNULL)
    if mbit:
        # a burst of at least one timer tick's worth at the rate, and a
        # queue of 100 ms: like a switch port, not a drop at every burst
        burst = max(256, mbit * 1000 // 8 // 100) * 1024
        subprocess.run(ns_cmd + ["tc", "qdisc", "add", "dev", "rep0", "root", "tbf", "rate",
                                 "%dmbit" % mbit, "burst", str(burst), "latency", "100ms"],
                       check=True)


def compress(args):
    """Every workload over every link rate with each --compress mode, one
    guest per workload, side by side in one run."""
    prefix, env = testnet_up("rz")
    b = Bench()
    rows = []
    try:
        pri, bak = ([os.path.join(ROOT, "scripts", "in-netns"), env[k]] for k in ("PRI_NS", "BAK_NS"))
        for w, (wname, append) in enumerate(COMPRESS_WORKLOADS):
            run, _ = b.guest("z%d" % w, args.mem[0], append)
            serial = os.path.join(run, "serial.log")
            writer = "work_mb" in append
            if writer:
                wait_for(lambda: work_total(serial) is not None, 30, "the work loop")
                time.sleep(2)
                rows.append((wname, "-", "unreplicated", work_rate(serial, args.seconds), None))
            port = 7700 + w
            b.agent(port, os.path.join(b.dir, "backup%d" % w), env["BACKUP_ADDR"], bak,
                    ["--no-failover", "--no-fence"])
            for mbit in args.links:
                shape(pri, mbit)
                for mode in args.modes:
                    p, sock = b.replicator(run, port, 50, ["--compress", mode], env["BACKUP_ADDR"], pri)
                    wait_for(lambda: committed(sock, 10), 300, "10 committed epochs")
                    ctl(sock, "reset-stats")
                    s0 = ctl(sock, "status")
                    rate = work_rate(serial, args.seconds) if writer else None
                    if not writer:
                        time.sleep(args.seconds)
                    s1 = ctl(sock, "status")
                    s1["window_pages"] = s1["dirty_pages_total"] - s0["dirty_pages_total"]
                    s1["window_epochs"] = s1["epochs_committed"] - s0["epochs_committed"]
                    rows.append((wname, "%d Mbit/s" % mbit, mode, rate, s1))
                    detach(p)
                    time.sleep(1)
            shape(pri, 0)
            if writer:
                rows.append((wname, "-", "unreplicated (again)", work_rate(serial, args.seconds), None))
    finally:
        b.close()
        testnet_down(prefix)
    print("| workload | link | --compress | compressing now | wire bytes per dirty page | "
          "checkpoint/epoch | dirty pages/epoch | epochs/s | pause p50 | ack p50 | guest work "
          "(page writes/s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for wname, link, mode, rate, s in rows:
        if not s:
            print("| %s | %s | %s | - | - | - | - | - | - | - | %.0f |" % (wname, link, mode, rate))
            continue
        per_page = s["checkpoint_bytes_per_epoch"] / max(1.0, s["dirty_pages_per_epoch"])
        print("| %s | %s | %s | %s | %.0f | %.0f KiB | %.0f | %.1f | %.1f ms | %.1f ms | %s |" % (
            wname, link, mode, "yes" if s["compress_active"] else "no", per_page,
            s["checkpoint_bytes_per_epoch"] / 1024, s["dirty_pages_per_epoch"],
            s["window_epochs"] / args.seconds, s["pause_p50_ms"], s["ack_p50_ms"],
            "%.0f" % rate if rate is not None else "-"), flush=True)


WORKLOADS = [
    # name, kernel arguments, primary metric
    ("idle", "", "available"),
    ("steady dirtier 50 MB/s", "dirty_mb_s=50 dirty_mb=32", "available"),
    ("bursty dirtier 100 MB/s, 0.3 s of 1 s", "dirty_mb_s=100 dirty_mb=32 dirty_burst=300,700",
     "available"),
    ("unthrottled writer", "work_mb=32", "work"),
    ("requests", "", "latency"),
]


def policies(args):
    """Every workload under every epoch setting, one guest per workload."""
    configs = [("fixed %d ms" % e, ["--epoch-ms", str(e)]) for e in (25, 50, 100, 200)]
    configs.append(("hybrid", ["--epoch-policy", "hybrid"]))
    prefix, env = testnet_up("rp")
    results = {}
    try:
        innet = os.path.join(ROOT, "scripts", "in-netns")
        pri, bak = ([innet, env[k]] for k in ("PRI_NS", "BAK_NS"))
        net_out = ["--net-out", "n0=packet:" + env["PRI_LAN_IF"]]
        for wi, (wname, kargs, metric) in enumerate(WORKLOADS):
            b = Bench()
            try:
                run, _ = b.guest("w%d" % wi, 128, ("ip_addr=%s/24 " % env["VM_IP"]) + kargs,
                                 ["--net", "--netns", env["PRI_NS"]])
                serial = os.path.join(run, "serial.log")
                port = 7700 + wi
                b.agent(port, os.path.join(b.dir, "backup"), env["BACKUP_ADDR"], bak,
                        ["--tap", "n0=" + env["BAK_TAP"]])
                for cname, cargs in configs:
                    p, sock = b.replicator(run, port, 50, net_out + cargs, env["BACKUP_ADDR"], pri)
                    wait_for(lambda: committed(sock, 5), 120, "5 committed epochs")
                    time.sleep(1)
                    ctl(sock, "reset-stats")
                    t0, s0, w0 = time.monotonic(), ctl(sock, "status"), work_total(serial)
                    lat = None
                    if metric == "latency":
                        lat = requests(env["CLI_NS"], env["VM_IP"], args.seconds, 1)
                    else:
                        time.sleep(args.seconds)
                    t1, s1, w1 = time.monotonic(), ctl(sock, "status"), work_total(serial)
                    win = t1 - t0
                    epochs = s1["epochs_committed"] - s0["epochs_committed"]
                    results[(wname, cname)] = {
                        "available": 100 - 100 * s1["pause_mean_ms"] * s1["pauses_recent"] / (win * 1e3),
                        "work": (w1 - w0) / win if metric == "work" else None,
                        "latency": lat["p50_ms"] if lat else None,
                        "latency_p99": lat["p99_ms"] if lat else None,
                        "bandwidth": s1["checkpoint_bytes_per_epoch"] * epochs / win / 1e6,
                        "pause_p99": s1["pause_p99_ms"],
                        "epoch": win * 1e3 / max(epochs, 1),
                    }
                    detach(p)
                    time.sleep(0.5)
            finally:
                b.close()
    finally:
        testnet_down(prefix)
    report_policies(results, configs)


def report_policies(results, configs):
    print("| workload | epochs | mean epoch | VM time not paused | guest work (writes/s) | "
          "reply latency p50 / p99 | checkpoint MB/s | pause p99 |")
    print("|---|---|---|---|---|---|---|---|")
    for wname, _, metric in WORKLOADS:
        for cname, _ in configs:
            r = results[(wname, cname)]
            print("| %s | %s | %.0f ms | %.1f%% | %s | %s | %.1f | %.1f ms |" % (
                wname, cname, r["epoch"], r["available"],
                "%.0f" % r["work"] if r["work"] is not None else "-",
                "%.1f / %.1f ms" % (r["latency"], r["latency_p99"]) if r["latency"] is not None else "-",
                r["bandwidth"], r["pause_p99"]))
    # Each workload's own figure of merit, relative to the best fixed length.
    print()
    print("| workload | figure of merit | best fixed | hybrid | hybrid vs best fixed |")
    print("|---|---|---|---|---|")
    scores = {c: [] for c, _ in configs}
    for wname, _, metric in WORKLOADS:
        lower = metric == "latency"
        vals = {c: results[(wname, c)][metric] for c, _ in configs}
        fixed = {c: v for c, v in vals.items() if c.startswith("fixed")}
        best = min(fixed.values()) if lower else max(fixed.values())
        bestname = [c for c, v in fixed.items() if v == best][0]
        for c, v in vals.items():
            scores[c].append(best / v if lower else v / best)
        print("| %s | %s | %s: %.4g | %.4g | %.2f |" % (
            wname, {"available": "VM time not paused (%)", "work": "writes/s",
                    "latency": "reply latency p50 (ms)"}[metric],
            bestname, best, vals["hybrid"], scores["hybrid"][-1]))
    print()
    print("| setting | worst workload vs best fixed | mean over the set |")
    print("|---|---|---|")
    for c, _ in configs:
        print("| %s | %.2f | %.2f |" % (c, min(scores[c]), sum(scores[c]) / len(scores[c])))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["checkpoint", "workrate", "network", "policies", "disk",
                                     "trackers", "link", "resync", "compress", "redis",
                                     "verify"])
    ap.add_argument("--links", default="1000,100",
                    help="'compress': replication link rates in Mbit/s (tc tbf)")
    ap.add_argument("--modes", default="off,on,auto", help="'compress': --compress modes")
    ap.add_argument("--dirty-mbs", default="16,128",
                    help="'resync': the dirtier's working sets in MiB, one guest each")
    ap.add_argument("--cut", type=int, default=10, help="'resync': seconds the link is down")
    ap.add_argument("--disk-mb", type=int, default=64, help="'resync': the guest's disk in MiB")
    ap.add_argument("--disk-filled", action="store_true",
                    help="'resync': write the whole disk image with data first")
    ap.add_argument("--state-under", default=None,
                    help="'resync': the backup's state dirs go under this directory (another "
                         "file system: an XFS mount clones a resumed replica)")
    ap.add_argument("--mem", default=None, help="guest RAM sizes in MB, comma-separated")
    ap.add_argument("--rates", default="0,25,50,100,200", help="dirty rates in MB/s")
    ap.add_argument("--rate", type=int, default=0,
                    help="'trackers': the dirty rate in MB/s; 0: an unthrottled writer that "
                         "dirties its whole working set in every epoch")
    ap.add_argument("--dirty-mb", type=int, default=4,
                    help="'trackers': the dirtier's working set in MiB, at every RAM size")
    ap.add_argument("--runs", default="soft-dirty:2,compare:2,compare:1",
                    help="'trackers': TRACKER:THREADS, comma-separated, run in this order")
    ap.add_argument("--epochs", default=None, help="epoch lengths in ms")
    ap.add_argument("--epoch-ms", type=int, default=50, help="epoch for 'checkpoint'")
    ap.add_argument("--captures", default="mirror,bitmap",
                    help="'disk', 'redis': disk captures (--disk-capture) to run")
    ap.add_argument("--policies", default="", help="'network', 'workrate': adaptive policies to add, e.g. hybrid")
    ap.add_argument("--work-mb", type=int, default=32, help="working set of the work loop")
    ap.add_argument("--trackers", default="auto",
                    help="'workrate': trackers to run each epoch with, e.g. "
                         "auto,soft-dirty-eager (soft-dirty clearing its log at every pause)")
    ap.add_argument("--seconds", type=float, default=10, help="measurement window")
    ap.add_argument("--repeat", type=int, default=2, help="'link': TLS/cleartext pairs of runs; 'disk': rounds of every row")
    args = ap.parse_args()
    args.dirty_mbs = [int(x) for x in args.dirty_mbs.split(",")]
    args.links = [int(x) for x in args.links.split(",")]
    args.modes = args.modes.split(",")
    args.captures = args.captures.split(",")
    args.mem = [int(x) for x in (args.mem or {"checkpoint": "128,512", "trackers": "128,512,1024,2048",
                                              "resync": "512", "redis": "256",
                                              "verify": "128,512"}.get(
        args.what, "128")).split(",")]
    args.rates = [int(x) for x in args.rates.split(",")]
    args.policies = [x for x in args.policies.split(",") if x]
    args.trackers = [x for x in args.trackers.split(",") if x]
    args.runs = [(k, int(t)) for k, t in (x.split(":") for x in args.runs.split(",") if x)]
    args.epochs = [int(x) for x in (args.epochs or {"network": "25,50,100", "disk": "50,200"}.get(
        args.what, "25,50,100,200")).split(",")]
    for exe in ("remus-agent", "remus-replicator", "remusctl"):
        if not os.access(os.path.join(BIN, exe), os.X_OK):
            sys.exit("bench: build first (make all guest)")
    print("<!-- %s, %s -->" % (" ".join(sys.argv), time.strftime("%Y-%m-%d %H:%M")), flush=True)
    {"checkpoint": checkpoint, "workrate": workrate, "network": network,
     "policies": policies, "disk": disk, "trackers": trackers, "link": link,
     "resync": resync, "compress": compress, "redis": redis, "verify": verify}[args.what](args)


if __name__ == "__main__":
    main()
