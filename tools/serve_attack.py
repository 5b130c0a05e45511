#!/usr/bin/env python3
"""Measures `workflow serve` under hostile clients, on 127.0.0.1 only.

    cargo build --release -p workflow-cli
    python3 tools/serve_attack.py target/release/workflow

Starts the server on a free loopback port with a fresh data directory and
reports, each attack bounded in count and time:

1. held connections: opens up to HOLD idle connections (no bytes sent) and
   counts how many the server keeps open before it refuses or closes them,
   and whether a normal request is still answered meanwhile;
2. stalled bodies: STALL connections each announce a 1 MiB body to a token
   that does not exist, send all of it but the last byte and stall; reports
   the server's RSS before and during the attack, and what the clients were
   answered;
3. shutdown under attack: with connections holding half-sent requests, sends
   SIGTERM and reports how long the process takes to exit.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HOLD = int(os.environ.get("HOLD", "2000"))
STALL = int(os.environ.get("STALL", "500"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def normal_request(port, timeout=2.0):
    """A plain GET of the dashboard; returns (status line, seconds) or an error."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET /workflow/dashboard/ HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            line = s.recv(64).split(b"\r\n")[0].decode(errors="replace")
            return line or "closed", time.monotonic() - start
    except OSError as e:
        return f"error: {e}", time.monotonic() - start


def start_server(binary, data, port):
    proc = subprocess.Popen(
        [binary, "--data", data, "serve", "--addr", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, _ = normal_request(port, 0.5)
        if status.startswith("HTTP/"):
            return proc
        time.sleep(0.1)
    proc.kill()
    sys.exit("the server did not come up")


def alive(sock):
    """Whether the server still holds the connection open."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def held_connections(port):
    socks, refused = [], 0
    for _ in range(HOLD):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=1))
        except OSError:
            refused += 1
    time.sleep(1.0)
    held = sum(1 for s in socks if alive(s))
    status, secs = normal_request(port)
    for s in socks:
        s.close()
    print(f"held connections: {held} of {HOLD} opened still held after 1 s "
          f"({refused} refused at connect); a normal request meanwhile: {status} in {secs*1000:.0f} ms")


def stalled_bodies(pid, port):
    before = rss_kib(pid)
    socks = []
    head = (b"POST /.well-known/workflow/v1/webhook/no-such-token HTTP/1.1\r\n"
            b"host: localhost\r\ncontent-length: 1048576\r\n\r\n")
    for _ in range(STALL):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.settimeout(5)
            s.sendall(head + b"x" * (1048576 - 1))
            socks.append(s)
        except OSError:
            pass
    time.sleep(1.0)
    during = rss_kib(pid)
    answers = {}
    for s in socks:
        s.settimeout(0.2)
        try:
            line = s.recv(64).split(b"\r\n")[0].decode(errors="replace") or "closed"
        except OSError:
            line = "no answer"
        answers[line] = answers.get(line, 0) + 1
        s.close()
    print(f"stalled 1 MiB bodies to an unknown token: {len(socks)} connections; "
          f"RSS {before // 1024} MiB before, {during // 1024} MiB during; answers {answers}")


def shutdown_under_attack(proc, port):
    socks = []
    for _ in range(100):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.sendall(b"POST /.well-known/workflow/v1/webhook/x HTTP/1.1\r\nhost: local")
            socks.append(s)
        except OSError:
            pass
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
        print(f"SIGTERM with {len(socks)} half-sent requests: exited in {time.monotonic() - start:.2f} s")
    except subprocess.TimeoutExpired:
        print(f"SIGTERM with {len(socks)} half-sent requests: still running after 60 s")
        proc.kill()
    for s in socks:
        s.close()


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as data:
        port = free_port()
        proc = start_server(binary, data, port)
        try:
            held_connections(port)
            stalled_bodies(proc.pid, port)
            shutdown_under_attack(proc, port)
        finally:
            if proc.poll() is None:
                proc.kill()


if __name__ == "__main__":
    main()
