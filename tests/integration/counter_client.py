#!/usr/bin/env python3
"""Client for the test guest's TCP counter service (scripts/guest/counterd.c).

Usage: counter_client.py HOST PORT --out FILE [--max-requests N]
           [--max-seconds S] [--interval-ms M] [--stop-file PATH]
           [--timeout-s T] [--progress FILE]

Opens ONE TCP connection and never reconnects. Sends "x\\n", waits for the
reply "N\\n" (at most --timeout-s, 30 s by default: long enough to ride out a
failover), records (send time, receive time, value), sleeps --interval-ms and
repeats, until N requests are answered, S seconds have passed or the stop
file exists (both checked between requests: a request in flight is always
waited for, so the run can last up to S + T seconds). counterd's counter
goes up by one per request, so every value must be the previous one plus one.

Writes JSON to --out:
  requests      replies received
  values        the replies, in order
  latencies_ms  receive time - send time, per reply
  send_ms, recv_ms  times relative to the connection's start (start_unix)
  reset         the connection was reset (ECONNRESET, EPIPE)
  timeout       a reply took longer than --timeout-s (or TCP gave up)
  error         anything else that ended the run early (null if none)
  max_gap_ms    the longest wait for one reply, an unanswered one included:
                the outage the client saw
  consecutive   every value is the previous + 1 (no repeat, gap, step back)
  first_bad     {"index", "prev", "value", "kind"} of the first value that is
                not, else null
  pending       the request in flight when the run ended, else null
--progress FILE is rewritten after every reply with "REQUESTS VALUE
RECV_UNIX_MS" so that a test can watch the run.

Prints a one-line summary. Exit status 0 iff no reset, no timeout, no error
and consecutive; 1 otherwise; 2 on a usage error.
"""
import argparse
import json
import os
import select
import signal
import socket
import sys
import time

REQUEST = b"x\n"
MAX_LINE = 64


class Stop(Exception):
    pass


def on_signal(signum, _frame):
    raise Stop("terminated by signal %d" % signum)


def write_atomic(path, text):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def check_values(values):
    """(consecutive, first_bad) for a list of counter values."""
    for i in range(1, len(values)):
        prev, v = values[i - 1], values[i]
        if v != prev + 1:
            kind = "repeat" if v == prev else ("step back" if v < prev else "gap")
            return False, {"index": i, "prev": prev, "value": v, "kind": kind}
    return True, None


def read_reply(sock, buf, deadline):
    """One reply line: (value, rest of buf). Raises socket.timeout at the
    deadline, ConnectionError on a reset, ValueError on garbage/EOF."""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no reply")
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            continue
        data = sock.recv(4096)
        if not data:
            raise EOFError("connection closed by the server (EOF)")
        buf += data
        if len(buf) > MAX_LINE and b"\n" not in buf:
            raise ValueError("reply too long: %r" % buf[:MAX_LINE])
    line, _, rest = buf.partition(b"\n")
    try:
        return int(line.decode("ascii").strip()), rest
    except (UnicodeDecodeError, ValueError):
        raise ValueError("bad reply %r" % line)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-requests", type=int, default=1000)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--interval-ms", type=float, default=20.0)
    ap.add_argument("--stop-file")
    ap.add_argument("--timeout-s", type=float, default=30.0,
                    help="per-request (and connect) timeout (default 30)")
    ap.add_argument("--progress")
    a = ap.parse_args()
    if a.max_requests < 1 or a.max_seconds <= 0 or a.interval_ms < 0 or a.timeout_s <= 0:
        ap.error("--max-requests, --max-seconds and --timeout-s must be > 0, --interval-ms >= 0")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    values, lat, send_ms, recv_ms = [], [], [], []
    reset = timeout = False
    error = None
    pending = None
    stopped_by = None
    start_unix = time.time()
    t0 = time.monotonic()
    sock = None
    t_send = None
    try:
        sock = socket.create_connection((a.host, a.port), timeout=a.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(a.timeout_s)
        t0 = time.monotonic()
        start_unix = time.time()
        buf = b""
        while True:
            if len(values) >= a.max_requests:
                stopped_by = "max-requests"
                break
            if time.monotonic() - t0 >= a.max_seconds:
                stopped_by = "max-seconds"
                break
            if a.stop_file and os.path.exists(a.stop_file):
                stopped_by = "stop-file"
                break
            t_send = time.monotonic()
            sock.sendall(REQUEST)  # 2 bytes into an empty send buffer
            v, buf = read_reply(sock, buf, t_send + a.timeout_s)
            t_recv = time.monotonic()
            values.append(v)
            send_ms.append(round((t_send - t0) * 1000, 3))
            recv_ms.append(round((t_recv - t0) * 1000, 3))
            lat.append(round((t_recv - t_send) * 1000, 3))
            t_send = None
            if buf:
                raise ValueError("unsolicited data after reply %d: %r" % (v, buf[:MAX_LINE]))
            if a.progress:
                write_atomic(a.progress, "%d %d %d\n" % (len(values), v, int(time.time() * 1000)))
            if a.interval_ms > 0:
                time.sleep(a.interval_ms / 1000.0)
    except socket.timeout:  # also TCP's own ETIMEDOUT (TimeoutError)
        timeout = True
    except (ConnectionResetError, BrokenPipeError):
        reset = True
    except OSError as e:
        error = "%s: %s" % (type(e).__name__, e)
    except (EOFError, ValueError, Stop) as e:
        error = str(e)
    finally:
        if sock is not None:
            sock.close()

    now = time.monotonic()
    if t_send is not None:
        pending = {"send_ms": round((t_send - t0) * 1000, 3),
                   "waited_ms": round((now - t_send) * 1000, 3)}
    gaps = lat + ([pending["waited_ms"]] if pending else [])
    consecutive, first_bad = check_values(values)
    result = {
        "host": a.host, "port": a.port,
        "requests": len(values),
        "values": values,
        "latencies_ms": lat,
        "send_ms": send_ms,
        "recv_ms": recv_ms,
        "start_unix": round(start_unix, 3),
        "duration_s": round(now - t0, 3),
        "reset": reset,
        "timeout": timeout,
        "error": error,
        "max_gap_ms": max(gaps) if gaps else 0.0,
        "consecutive": consecutive,
        "first_bad": first_bad,
        "pending": pending,
        "stopped_by": stopped_by,
    }
    write_atomic(a.out, json.dumps(result) + "\n")

    ok = not reset and not timeout and error is None and consecutive
    what = []
    if values:
        what.append("values %d..%d" % (values[0], values[-1]))
    what.append("consecutive" if consecutive else
                "NOT consecutive (%s: %d after %d at #%d)" % (
                    first_bad["kind"], first_bad["value"], first_bad["prev"], first_bad["index"]))
    if reset:
        what.append("connection RESET")
    if timeout:
        what.append("TIMEOUT after %.0f ms without a reply" % (pending or {}).get("waited_ms", 0))
    if error:
        what.append("error: %s" % error)
    print("counter_client: %s %d requests in %.1f s, %s, max gap %.1f ms%s" % (
        "ok" if ok else "FAILED", len(values), now - t0, ", ".join(what),
        result["max_gap_ms"], ", stopped by " + stopped_by if stopped_by else ""))
    sys.stdout.flush()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
