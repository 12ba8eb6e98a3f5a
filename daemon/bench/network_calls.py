#!/usr/bin/env python3
"""The client of daemon/bench/network.sh: times network API calls on a
daemon's unix socket, the same way for berthd and dockerd (one kept-alive
HTTP/1.1 connection, http.client, each call timed from just before the
request is written to just after the whole answer is read), and prints the
comparison table.

  network_calls.py measure SOCKET DAEMON PREFIX NET16 N [SANDBOX]
      One JSON line per operation (p50/p90 in ms) on stdout.
      PREFIX names the networks and their bridges (PREFIX + "a" for the one
      the sandbox joins, PREFIX + "x" + i for the create/delete rounds);
      NET16 is "10.23x": the anchor gets NET16.0.0/24, round i
      NET16.(1 + i % 254).0/24. SANDBOX, when given, is a berthd sandbox or
      a running dockerd container; it is connected to and disconnected from
      the anchor N times. Three untimed warm-up rounds precede each loop.
      Everything it creates is removed before it returns, also on failure.
  network_calls.py table RESULTS
      The table: operation, berthd p50/p90, dockerd p50/p90, ratios, target.
"""
import http.client
import json
import math
import socket
import sys
import time

WARMUP = 3
TARGET_MS = 5.0


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=120)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class CallError(Exception):
    pass


def call(conn, method, url, body=None):
    """(ms, decoded JSON or None); raises CallError on a status >= 300."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    t0 = time.perf_counter_ns()
    conn.request(method, url, body=data, headers=headers)
    resp = conn.getresponse()
    payload = resp.read()
    ms = (time.perf_counter_ns() - t0) / 1e6
    if resp.status >= 300:
        raise CallError(f"{method} {url}: {resp.status} {payload.decode(errors='replace').strip()}")
    return ms, (json.loads(payload) if payload.strip() else None)


def pct(values, p):
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


def emit(daemon, op, values):
    print(json.dumps({"daemon": daemon, "op": op, "n": len(values),
                      "p50_ms": round(pct(values, 50), 3), "p90_ms": round(pct(values, 90), 3)}), flush=True)


def net_body(name, subnet):
    return {"Name": name, "Driver": "bridge", "IPAM": {"Config": [{"Subnet": subnet}]},
            "Options": {"com.docker.network.bridge.name": name}}


def measure(sock, daemon, prefix, net16, n, sandbox):
    conn = UnixConnection(sock)
    made = []          # network ids to remove at the end
    joined = None      # (network id, sandbox) while connected
    try:
        # The network the sandbox joins; it also stays up during the
        # create/delete rounds, so those measure the steady state (berthd's
        # nftables table and dockerd's chains already exist).
        _, r = call(conn, "POST", "/networks/create", net_body(prefix + "a", f"{net16}.0.0/24"))
        anchor = r["Id"]
        made.append(anchor)

        creates, deletes = [], []
        for i in range(WARMUP + n):
            ms_c, r = call(conn, "POST", "/networks/create",
                           net_body(f"{prefix}x{i}", f"{net16}.{1 + i % 254}.0/24"))
            made.append(r["Id"])
            ms_d, _ = call(conn, "DELETE", f"/networks/{r['Id']}")
            made.pop()
            if i >= WARMUP:
                creates.append(ms_c)
                deletes.append(ms_d)
        emit(daemon, "create", creates)
        emit(daemon, "delete", deletes)

        if sandbox:
            joins, leaves = [], []
            for i in range(WARMUP + n):
                ms_j, _ = call(conn, "POST", f"/networks/{anchor}/connect", {"Container": sandbox})
                joined = (anchor, sandbox)
                ms_l, _ = call(conn, "POST", f"/networks/{anchor}/disconnect", {"Container": sandbox})
                joined = None
                if i >= WARMUP:
                    joins.append(ms_j)
                    leaves.append(ms_l)
            emit(daemon, "connect", joins)
            emit(daemon, "disconnect", leaves)
    finally:
        # Best effort, each call on a fresh connection (the old one may be
        # mid-answer); network.sh cleans up whatever is left.
        conn.close()
        undo = [("POST", f"/networks/{joined[0]}/disconnect", {"Container": joined[1], "Force": True})] if joined else []
        undo += [("DELETE", f"/networks/{nid}", None) for nid in reversed(made)]
        for method, url, body in undo:
            c = UnixConnection(sock)
            try:
                call(c, method, url, body)
            except Exception as e:  # noqa: BLE001
                print(f"{daemon}: cleanup: {method} {url}: {e}", file=sys.stderr)
            finally:
                c.close()


ROWS = [
    ("create", "bridge network create"),
    ("delete", "bridge network delete"),
    ("connect", "endpoint connect (join)"),
    ("disconnect", "endpoint disconnect (leave)"),
]
TARGETS = {"create": TARGET_MS, "connect": TARGET_MS, "disconnect": TARGET_MS}


def table(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    by = {(r["daemon"], r["op"]): r for r in rows}
    cell = lambda r: f"{r['p50_ms']:7.2f} / {r['p90_ms']:7.2f}" if r else f"{'-':>7} / {'-':>7}"
    print(f"{'operation':28} | {'berthd p50 / p90':>17} | {'dockerd p50 / p90':>17} | "
          f"{'ratio p50 / p90':>15} | target (berthd)")
    print(f"{'-' * 28}-+-{'-' * 17}-+-{'-' * 17}-+-{'-' * 15}-+-{'-' * 24}")
    for op, label in ROWS:
        b, d = by.get(("berthd", op)), by.get(("dockerd", op))
        ratio = f"{b['p50_ms'] / d['p50_ms']:6.2f} / {b['p90_ms'] / d['p90_ms']:6.2f}" if b and d else f"{'-':>6} / {'-':>6}"
        t = TARGETS.get(op)
        if t is None or not b:
            target = "-"
        else:
            verdict = lambda v: "met" if v <= t else "MISSED"
            target = f"<= {t:g} ms: p50 {verdict(b['p50_ms'])}, p90 {verdict(b['p90_ms'])}"
        print(f"{label:28} | {cell(b)} | {cell(d)} | {ratio:>15} | {target}")
    print("(ms; ratio = berthd / dockerd, below 1 means berthd is faster)")


def main(argv):
    if len(argv) >= 7 and argv[1] == "measure":
        try:
            measure(argv[2], argv[3], argv[4], argv[5], int(argv[6]), argv[7] if len(argv) > 7 else None)
        except (CallError, OSError, http.client.HTTPException) as e:
            print(f"{argv[3]}: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        return 0
    if len(argv) == 3 and argv[1] == "table":
        table(argv[2])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
