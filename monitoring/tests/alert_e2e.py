"""A real Prometheus evaluates the real ServiceDown rule on a dead target and a real Alertmanager
(Debian 0.25) delivers it through the real Telegram receiver of alertmanager.yml to an in-test
HTTP server standing in for api.telegram.org. Checks the recorded sendMessage request.

Changes to the committed files, all in the temp dir: ServiceDown's `for` is shortened from 1m
to 2s (the test would otherwise wait a minute), intervals are 1s, Alertmanager's
`bot_token_file` (>= 0.26) becomes a throwaway `bot_token` and `api_url` the recorder."""
import http.server
import json
import os
import re
import sys
import urllib.parse

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import MONITORING, Stack, fail, free_port, http_get, ok, wait_for  # noqa: E402

TOKEN = "123456:TEST-not-a-real-token"


class Recorder(http.server.BaseHTTPRequestHandler):
    requests = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
        ctype = self.headers.get("content-type", "")
        if "json" in ctype:
            fields = json.loads(body)
        else:
            fields = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
        Recorder.requests.append({"path": self.path, "fields": fields})
        reply = json.dumps({"ok": True, "result": {"message_id": len(Recorder.requests),
                                                    "date": 0, "chat": {"id": 1, "type": "group"}}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def main():
    stack = Stack()
    try:
        run(stack)
    finally:
        stack.stop()


def run(stack):
    recorder = stack.serve(Recorder)
    api_url = f"http://127.0.0.1:{recorder.server_address[1]}"

    # Alertmanager config: the committed one with the 0.25-compatible token and the recorder.
    am = yaml.safe_load(open(os.path.join(MONITORING, "alertmanager/alertmanager.yml")))
    tg = am["receivers"][0]["telegram_configs"][0]
    assert tg.pop("bot_token_file").startswith("/run/secrets/"), "token must come from a secret file"
    tg["bot_token"] = TOKEN
    tg["api_url"] = api_url
    chat_id = tg["chat_id"]
    with open(stack.path("alertmanager.yml"), "w") as f:
        yaml.safe_dump(am, f, sort_keys=False, allow_unicode=True)

    # Rules: the committed file, ServiceDown's `for` shortened.
    rules = yaml.safe_load(open(os.path.join(MONITORING, "prometheus/alert.rules.yml")))
    found = False
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "ServiceDown":
                rule["for"] = "2s"
                found = True
    assert found, "ServiceDown rule missing"
    with open(stack.path("alert.rules.yml"), "w") as f:
        yaml.safe_dump(rules, f, sort_keys=False, allow_unicode=True)

    am_port, am_cluster, prom_port, dead_port = free_port(), free_port(), free_port(), free_port()
    prom_cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                   "external_labels": {"monitor": "product-store-test"}},
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "rule_files": [stack.path("alert.rules.yml")],
        # nothing listens on dead_port: `up` is 0 at the first scrape
        "scrape_configs": [{"job_name": "order", "static_configs": [{"targets": [f"127.0.0.1:{dead_port}"]}]}],
    }
    with open(stack.path("prometheus.yml"), "w") as f:
        yaml.safe_dump(prom_cfg, f)

    os.makedirs(stack.path("am-data"))
    os.makedirs(stack.path("prom-data"))
    stack.start("alertmanager", ["prometheus-alertmanager", f"--config.file={stack.path('alertmanager.yml')}",
                                 f"--storage.path={stack.path('am-data')}",
                                 f"--web.listen-address=127.0.0.1:{am_port}",
                                 f"--cluster.listen-address=", "--log.level=debug"])
    am_base = f"http://127.0.0.1:{am_port}"
    wait_for("alertmanager ready", lambda: http_get(f"{am_base}/-/ready")[0] == 200, stack=stack, logs=["alertmanager"])
    ok("alertmanager 0.25 accepted the receiver config and is ready")

    stack.start("prometheus", ["prometheus", f"--config.file={stack.path('prometheus.yml')}",
                               f"--storage.tsdb.path={stack.path('prom-data')}",
                               f"--web.listen-address=127.0.0.1:{prom_port}"])
    prom_base = f"http://127.0.0.1:{prom_port}"
    wait_for("prometheus ready", lambda: http_get(f"{prom_base}/-/ready")[0] == 200, stack=stack, logs=["prometheus"])

    def firing_in_prometheus():
        _, _, body = http_get(f"{prom_base}/api/v1/alerts")
        return [a for a in json.loads(body)["data"]["alerts"]
                if a["labels"]["alertname"] == "ServiceDown" and a["state"] == "firing"]
    wait_for("ServiceDown firing in Prometheus", firing_in_prometheus, timeout=60, stack=stack, logs=["prometheus"])
    ok("Prometheus evaluates ServiceDown on up == 0 and fires it")

    # group_wait is 10s in the committed config
    wait_for("Alertmanager to call the Telegram API", lambda: Recorder.requests, timeout=60,
             stack=stack, logs=["alertmanager"])
    req = Recorder.requests[0]
    if req["path"] != f"/bot{TOKEN}/sendMessage":
        fail(f"unexpected Telegram API path {req['path']}")
    fields = req["fields"]
    if str(fields.get("chat_id")) != str(chat_id):
        fail(f"chat_id {fields.get('chat_id')} != {chat_id}")
    if fields.get("parse_mode") != "HTML":
        fail(f"parse_mode {fields.get('parse_mode')}")
    text = fields.get("text", "")
    expected = [
        "🚨 <b>ServiceDown</b> (firing)",
        "<b>Service:</b> order",
        "<b>Severity:</b> critical",
        "<b>Alert:</b> Service order is down",
        f"<b>Description:</b> Prometheus cannot scrape order at 127.0.0.1:{dead_port} for 1 minute",
        "<b>Runbook:</b> monitoring/RUNBOOK.md#servicedown",
        '<a href="http://localhost:3000">📊 Open Grafana</a>',
    ]
    for piece in expected:
        if piece not in text:
            fail(f"message lacks {piece!r}:\n{text}")
    if not re.search(r"<b>Started:</b> \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", text):
        fail(f"message lacks the start time:\n{text}")
    ok("Telegram sendMessage recorded: path with the bot token, chat_id, parse_mode HTML, rendered text")
    print("    " + text.strip().replace("\n", "\n    "))


if __name__ == "__main__":
    main()
