"""Helpers for the monitoring stack's end-to-end tests: free loopback ports, daemons started in
a temporary directory and always stopped, bounded waits. Used by the *_e2e.py scripts that
scripts/test-monitoring.sh runs."""
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

MONITORING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    """A port free on 127.0.0.1 right now (below 32768 is not guaranteed; the kernel picks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def substitute(text, values):
    """envsubst for ${NAME}: every placeholder must have a value (a typo fails loudly)."""
    import re

    def repl(m):
        if m.group(1) not in values:
            raise KeyError(f"no value for ${{{m.group(1)}}}")
        return str(values[m.group(1)])

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}", repl, text)


class Stack:
    """Processes and threads of one test; stop() ends them all (only those started here)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="obskit-monitoring-")
        self.procs = []
        self.servers = []

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def start(self, name, argv, **kw):
        log = open(self.path(f"{name}.log"), "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kw)
        self.procs.append((name, proc))
        return proc

    def serve(self, handler_cls):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers.append(server)
        return server

    def log(self, name):
        try:
            with open(self.path(f"{name}.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def stop(self):
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for server in self.servers:
            server.shutdown()
            server.server_close()
        subprocess.run(["rm", "-rf", self.dir])


def wait_for(what, check, timeout=60, interval=0.25, stack=None, logs=()):
    """Calls check() until it returns a truthy value or raises nothing; fails after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - retried until the deadline, then reported
            last = e
        time.sleep(interval)
    detail = "".join(f"\n--- {n} log:\n{stack.log(n)}" for n in logs) if stack else ""
    fail(f"timed out after {timeout}s waiting for {what} (last error: {last}){detail}")


def http_get(url, headers=None, timeout=5):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, dict(resp.headers), resp.read().decode("utf-8", "replace")


def prom_query(base, expr, timeout=10):
    """Instant query through Prometheus's HTTP API; returns the result list or raises."""
    data = urllib.parse.urlencode({"query": expr}).encode()
    with urllib.request.urlopen(f"{base}/api/v1/query", data=data, timeout=timeout) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {body}")
    return body["data"]["result"]


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    raise SystemExit(1)


def ok(message):
    print(f"  ok: {message}")


import urllib.parse  # noqa: E402  (used by prom_query)
