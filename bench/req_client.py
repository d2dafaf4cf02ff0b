#!/usr/bin/env python3
"""Request/response load on the test guest's counter service for the
benchmarks: CONNS connections, each sending one request and waiting for its
reply, back to back, for SECONDS. Prints JSON: requests, requests_per_s,
latency p50/p99/max in ms. Bounded in time; connects only where it is told
(a test host in the benchmark's own network namespaces)."""
import json
import socket
import sys
import threading
import time


def worker(host, port, deadline, lat, errors):
    try:
        s = socket.create_connection((host, port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            s.sendall(b"x\n")
            if not f.readline():
                raise ConnectionError("closed")
            lat.append((time.monotonic() - t0) * 1e3)
        s.close()
    except OSError as e:
        errors.append(str(e))


def main():
    host, port, seconds, conns = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    deadline = time.monotonic() + seconds
    lats, errors, threads = [], [], []
    t0 = time.monotonic()
    for _ in range(conns):
        lat = []
        lats.append(lat)
        t = threading.Thread(target=worker, args=(host, port, deadline, lat, errors))
        t.start()
        threads.append(t)
    for t in threads:
        t.join(seconds + 60)
    elapsed = time.monotonic() - t0
    all_lat = sorted(x for lat in lats for x in lat)
    q = lambda p: all_lat[min(len(all_lat) - 1, int(p * (len(all_lat) - 1) + 0.5))] if all_lat else 0
    print(json.dumps({"requests": len(all_lat), "requests_per_s": len(all_lat) / elapsed,
                      "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": all_lat[-1] if all_lat else 0,
                      "errors": errors}))


if __name__ == "__main__":
    main()
