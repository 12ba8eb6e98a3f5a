#!/usr/bin/env python3
"""Daemon start time and idle memory: berthd (all built-in plugins, release
build) side by side with Debian's dockerd as the reference.

Start time = from exec until `GET /_ping` answers OK on the daemon's socket.
Idle RSS = VmRSS two seconds after it answered. Each daemon gets a fresh
root, exec root and socket under a temp dir; everything is removed after.

Usage: python3 daemon/bench/startup.py [--runs N] [--no-docker]
(run `cargo build --release --workspace` first; the script does it too).
Budgets (DESIGN.md): start <= 100 ms, idle RSS <= 20 MiB.
"""
import argparse, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REL = os.path.join(ROOT, "target", "release")


def ping(sock_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(sock_path)
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = s.recv(4096)
        return b" 200 " in data.split(b"\r\n", 1)[0]
    except OSError:
        return False
    finally:
        s.close()


def rss_kib(pid):
    total = 0
    # the daemon and its children (dockerd starts containerd)
    pids = [pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                                   text=True).stdout.split()]
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def run_once(argv, sock_path, env=None, settle=2.0):
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = t0 + 30
    while time.perf_counter() < deadline:
        if os.path.exists(sock_path) and ping(sock_path):
            break
        if proc.poll() is not None:
            raise SystemExit(f"{argv[0]} exited with {proc.returncode} before answering")
        time.sleep(0.0005)
    else:
        proc.kill()
        raise SystemExit(f"{argv[0]} did not answer /_ping within 30 s")
    started = time.perf_counter() - t0
    time.sleep(settle)
    rss = rss_kib(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return started * 1000, rss / 1024


def forward_policy():
    out = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("-P FORWARD"):
            return line.split()[2]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--no-docker", action="store_true")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "--workspace"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="berth-startup-")
    results = {}
    try:
        conf = os.path.join(tmp, "berth.toml")
        default = open(os.path.join(ROOT, "core", "src", "default.toml")).read()
        default = default.replace('plugin_dirs = ["/usr/local/lib/berth/plugins", "/usr/lib/berth/plugins"]',
                                  f'plugin_dirs = ["{REL}"]')
        open(conf, "w").write(default)
        samples = []
        for i in range(args.runs):
            d = os.path.join(tmp, f"b{i}")
            sock = os.path.join(d, "berth.sock")
            samples.append(run_once([os.path.join(REL, "berthd"), "--config", conf, "--root", d + "/root",
                                     "--exec-root", d + "/run", "--socket", sock, "--log-level", "error"], sock))
        results["berthd"] = samples
        dockerd = shutil.which("dockerd")
        if dockerd and not args.no_docker:
            policy = forward_policy()
            samples = []
            try:
                for i in range(min(args.runs, 3)):
                    d = os.path.join(tmp, f"d{i}")
                    os.makedirs(d)
                    sock = os.path.join(d, "docker.sock")
                    samples.append(run_once([dockerd, "--data-root", d + "/root", "--exec-root", d + "/run",
                                             "-H", "unix://" + sock, "--pidfile", d + "/docker.pid",
                                             "--iptables=false", "--ip6tables=false", "--bridge=none",
                                             "--log-level=error"], sock, settle=2.0))
            finally:
                if policy and forward_policy() != policy:
                    subprocess.run(["iptables", "-P", "FORWARD", policy])
            results["dockerd"] = samples
    finally:
        subprocess.run(["sh", "-c", f"grep -q {tmp} /proc/self/mountinfo && umount -R {tmp}/* 2>/dev/null; true"])
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'daemon':8} {'runs':>4} {'start median':>13} {'start min':>10} {'idle RSS':>10}")
    for name, s in results.items():
        starts = [x[0] for x in s]
        rss = statistics.median(x[1] for x in s)
        print(f"{name:8} {len(s):4} {statistics.median(starts):10.1f} ms {min(starts):7.1f} ms {rss:7.1f} MiB")
    if "dockerd" in results:
        b = statistics.median(x[0] for x in results["berthd"])
        d = statistics.median(x[0] for x in results["dockerd"])
        br = statistics.median(x[1] for x in results["berthd"])
        dr = statistics.median(x[1] for x in results["dockerd"])
        print(f"ratio berthd/dockerd: start {b / d:.3f}x, idle RSS {br / dr:.3f}x")


if __name__ == "__main__":
    main()
