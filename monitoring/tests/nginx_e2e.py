"""The gateway end to end, on loopback: the real nginx runs gateway.conf.template (upstreams
substituted with in-test stub services), proxies the four prefixes with the trace context
intact, prometheus-nginx-exporter scrapes its stub_status, and mtail turns its access log into
per-location counters and histograms. Everything binds 127.0.0.1 on free ports; nginx runs
with its prefix, pid, temp and log paths in a temp dir (works as root and as a normal user)."""
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import MONITORING, Stack, fail, free_port, http_get, ok, substitute, wait_for  # noqa: E402

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


def stub(name):
    class Echo(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self):
            length = int(self.headers.get("content-length", 0))
            if length:
                self.rfile.read(length)
            body = json.dumps({"service": name, "method": self.command, "path": self.path,
                               "traceparent": self.headers.get("traceparent"),
                               "tracestate": self.headers.get("tracestate")}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = answer  # noqa: N815

        def log_message(self, *args):
            pass
    return Echo


def parse_metrics(text):
    """{name: [(labels dict, value)]} from the Prometheus text format."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if not m:
            continue
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out.setdefault(m.group(1), []).append((labels, float(m.group(4))))
    return out


def catalogue_names(source):
    src = yaml.safe_load(open(os.path.join(MONITORING, "metrics/catalogue.yml")))["sources"][source]
    names = set(src.get("counters", [])) | set(src.get("gauges", []))
    for h in src.get("histograms", []):
        names |= {f"{h}_bucket", f"{h}_sum", f"{h}_count"}
    return names


def main():
    stack = Stack()
    try:
        run(stack)
    finally:
        stack.stop()


def run(stack):
    os.chmod(stack.dir, 0o755)  # nginx workers may run as `nobody` when the test runs as root
    upstreams = {svc: stack.serve(stub(svc)) for svc in ("backend", "cart", "order", "user")}
    gw_port, status_port, exporter_port, mtail_port = free_port(), free_port(), free_port(), free_port()
    access_log = stack.path("logs", "gateway_access.log")
    for d in ("logs", "temp"):
        os.makedirs(stack.path(d))
        os.chmod(stack.path(d), 0o777)
    values = {
        "GATEWAY_LISTEN": f"127.0.0.1:{gw_port}",
        "STATUS_LISTEN": f"127.0.0.1:{status_port}",
        "ACCESS_LOG": access_log,
    }
    for svc, server in upstreams.items():
        values[f"{svc.upper()}_UPSTREAM"] = f"127.0.0.1:{server.server_address[1]}"
    template = open(os.path.join(MONITORING, "nginx/gateway.conf.template")).read()
    with open(stack.path("gateway.conf"), "w") as f:
        f.write(substitute(template, values))
    temp = stack.path("temp")
    with open(stack.path("nginx.conf"), "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
pid {stack.path('nginx.pid')};
error_log {stack.path('logs', 'error.log')} info;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    access_log off;
    include {stack.path('gateway.conf')};
}}
""")
    base_args = [NGINX, "-p", stack.dir + "/", "-c", stack.path("nginx.conf"), "-e", stack.path("logs", "error.log")]
    test = subprocess.run(base_args + ["-t"], capture_output=True, text=True)
    if test.returncode != 0:
        fail(f"nginx -t failed:\n{test.stderr}")
    ok("nginx -t accepts the gateway config (upstreams substituted)")
    stack.start("nginx", base_args)
    gw = f"http://127.0.0.1:{gw_port}"

    def gateway_up():
        try:
            http_get(f"{gw}/nope")
        except urllib.error.HTTPError as e:
            return e.code == 404
    wait_for("nginx to listen", gateway_up, stack=stack, logs=["nginx"])

    # mtail tails the access log from its current end: start it before the traffic.
    stack.start("mtail", ["mtail", "-progs", os.path.join(MONITORING, "nginx/nginx.mtail"), "-logs", access_log,
                          "-emit_prog_label=false", "-address", "127.0.0.1", "-port", str(mtail_port),
                          "-logtostderr"])
    mtail = f"http://127.0.0.1:{mtail_port}/metrics"
    wait_for("mtail /metrics", lambda: http_get(mtail)[0] == 200, stack=stack, logs=["mtail"])

    # --- routing and trace context
    routes = {"backend": ("GET", "/api/products?category=Books&limit=5"),
              "cart": ("POST", "/cart-api/cart/7/add"),
              "order": ("GET", "/order-api/orders/3"),
              "user": ("POST", "/user-api/login")}
    sent = {}
    for _ in range(3):
        for svc, (method, path) in routes.items():
            data = b'{"x":1}' if method == "POST" else None
            req = urllib.request.Request(gw + path, data=data, method=method,
                                         headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE,
                                                  "content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                got = json.load(resp)
            if got["service"] != svc or got["path"] != path or got["method"] != method:
                fail(f"{method} {path} reached {got}")
            if got["traceparent"] != TRACEPARENT or got["tracestate"] != TRACESTATE:
                fail(f"trace context changed on the way to {svc}: {got}")
            sent[(svc, method)] = sent.get((svc, method), 0) + 1
    ok("/api/, /cart-api/, /order-api/, /user-api/ reach their services with path, traceparent, tracestate intact")
    try:
        http_get(f"{gw}/unknown/route")
        fail("an unknown prefix was proxied")
    except urllib.error.HTTPError as e:
        body = json.loads(e.read())
        if e.code != 404 or body.get("error") != "not_found":
            fail(f"unknown prefix answered {e.code} {body}")
    sent[("other", "GET")] = 1
    ok("unknown prefix: 404 JSON error from the gateway itself")

    # --- stub_status through prometheus-nginx-exporter
    stack.start("nginx-exporter", ["prometheus-nginx-exporter",
                                   f"-nginx.scrape-uri=http://127.0.0.1:{status_port}/stub_status",
                                   f"-web.listen-address=127.0.0.1:{exporter_port}"])
    exporter = f"http://127.0.0.1:{exporter_port}/metrics"
    text = wait_for("nginx exporter metrics", lambda: (lambda r: r[2] if "nginx_up 1" in r[2] else None)(http_get(exporter)),
                    stack=stack, logs=["nginx-exporter"])
    metrics = parse_metrics(text)
    exported = {n for n in metrics if n.startswith("nginx_")}
    expected = catalogue_names("nginx-exporter")
    if exported != expected:
        fail(f"nginx exporter names differ from the catalogue: missing {expected - exported}, extra {exported - expected}")
    total = metrics["nginx_http_requests_total"][0][1]
    if total < sum(sent.values()):
        fail(f"stub_status counted {total} requests, {sum(sent.values())} were sent")
    ok(f"prometheus-nginx-exporter on stub_status: {sorted(exported)} (exactly the catalogue), {int(total)} requests")

    # --- mtail per-location metrics
    def mtail_counts():
        m = parse_metrics(http_get(mtail)[2])
        got = {(l["location"], l["method"]): v for l, v in m.get("nginx_location_requests_total", [])}
        want = {(loc, method): n for (loc, method), n in sent.items()}
        return m if got == want else None
    m = wait_for("mtail to count every request per location", mtail_counts, timeout=30, stack=stack, logs=["mtail"])
    names = {n for n in m if n.startswith("nginx_")}  # beside mtail's own go_/mtail_/process_
    if names != catalogue_names("mtail"):
        fail(f"mtail names {sorted(names)} differ from the catalogue")
    statuses = {(l["location"], l["status"]) for l, _ in m["nginx_location_requests_total"]}
    if ("other", "404") not in statuses or ("backend", "200") not in statuses:
        fail(f"status labels wrong: {statuses}")
    counts = {l["location"]: v for l, v in m["nginx_location_request_duration_seconds_count"]}
    inf = {l["location"]: v for l, v in m["nginx_location_request_duration_seconds_bucket"] if l["le"] == "+Inf"}
    first = {l["location"]: v for l, v in m["nginx_location_request_duration_seconds_bucket"] if l["le"] == "0.005"}
    for loc in ("backend", "cart", "order", "user", "other"):
        want = sum(n for (l, _), n in sent.items() if l == loc)
        if counts.get(loc) != want or inf.get(loc) != want:
            fail(f"{loc}: histogram count {counts.get(loc)}, +Inf bucket {inf.get(loc)}, sent {want}")
    if first.get("other") != 1:
        fail(f"the gateway's own 0.000 s answer is not in the first bucket: {first}")
    zero_lines = sum(1 for line in open(access_log) if line.split()[3] == "0.000")
    ok(f"mtail: per-location counters and histograms match the traffic; {zero_lines} requests logged as 0.000 s "
       "are in every bucket (the +Inf bucket equals the count)")


if __name__ == "__main__":
    main()
