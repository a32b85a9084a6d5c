"""Checks monitoring/docker-compose.yml without Docker (none here): it parses, every mounted
file and build input exists, secrets stay out of git, and ports and environment agree with
prometheus.yml, the nginx template, the Grafana datasources and the services' contract."""
import os
import re
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import MONITORING, fail, ok  # noqa: E402

ROOT = os.path.dirname(MONITORING)
SHOP = {"backend": (8000, "BACKEND"), "cart": (8001, "CART"), "order": (8002, "ORDER"), "user": (8003, "USER")}


def ports_of(svc):
    """Container ports a service publishes or exposes."""
    out = set()
    for p in svc.get("ports", []):
        out.add(int(str(p).split(":")[-1].split("/")[0]))
    for p in svc.get("expose", []):
        out.add(int(str(p).split("/")[0]))
    return out


def main():
    errors = []
    err = errors.append
    compose = yaml.safe_load(open(os.path.join(MONITORING, "docker-compose.yml")))
    services = compose["services"]
    want = set(SHOP) | {"cassandra", "jaeger", "nginx", "nginx-exporter", "mtail", "prometheus",
                        "alertmanager", "grafana", "locust"}
    if set(services) != want:
        err(f"services {sorted(services)} != {sorted(want)}")

    # --- every bind mount and build input exists
    mounts = 0
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith((".", "/")):
                mounts += 1
                if not os.path.exists(os.path.normpath(os.path.join(MONITORING, src))):
                    err(f"{name}: mounted {src} does not exist")
            elif src not in compose.get("volumes", {}):
                err(f"{name}: named volume {src} not declared")
        build = svc.get("build")
        if build:
            ctx = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            path = os.path.normpath(os.path.join(MONITORING, ctx, dockerfile))
            if not os.path.isfile(path):
                err(f"{name}: Dockerfile {path} missing")
        if not build and not svc.get("image"):
            err(f"{name}: neither image nor build")

    # --- secrets: files under ./secrets, ignored by git, never tracked
    for sname, spec in compose.get("secrets", {}).items():
        path = os.path.normpath(os.path.join(MONITORING, spec["file"]))
        if not path.startswith(os.path.join(MONITORING, "secrets") + os.sep):
            err(f"secret {sname} outside monitoring/secrets")
        ignored = subprocess.run(["git", "-C", ROOT, "check-ignore", "-q", path]).returncode == 0
        tracked = subprocess.run(["git", "-C", ROOT, "ls-files", "--error-unmatch", path],
                                 capture_output=True).returncode == 0
        if not ignored or tracked:
            err(f"secret file {spec['file']} is not git-ignored or is tracked")
    if "telegram_bot_token" not in services["alertmanager"].get("secrets", []):
        err("alertmanager does not get the telegram_bot_token secret")
    am = yaml.safe_load(open(os.path.join(MONITORING, "alertmanager/alertmanager.yml")))
    tg = am["receivers"][0]["telegram_configs"][0]
    if tg.get("bot_token_file") != "/run/secrets/telegram_bot_token" or "bot_token" in tg:
        err(f"alertmanager token not from the secret file: {tg.get('bot_token_file')}")
    image = services["alertmanager"]["image"]
    m = re.search(r":v0\.(\d+)", image)
    if not m or int(m.group(1)) < 26:
        err(f"{image} predates bot_token_file (0.26)")

    # --- the four services: image, command, ports, environment
    dockerfile = open(os.path.join(MONITORING, "Dockerfile")).read()
    for name, (port, prefix) in SHOP.items():
        svc = services[name]
        env = svc.get("environment", {})
        if svc.get("command") != [name]:
            err(f"{name}: command {svc.get('command')}")
        if f"target/release/{name}" not in dockerfile or f"-p {name}" not in dockerfile:
            err(f"Dockerfile does not build the {name} binary")
        cargo = os.path.join(ROOT, "services", name, "Cargo.toml")
        if not os.path.isfile(cargo) or not re.search(rf'^name\s*=\s*"{name}"', open(cargo).read(), re.M):
            err(f"no workspace package {name}")
        if port not in ports_of(svc) or f"{port}:{port}" not in [str(p) for p in svc.get("ports", [])]:
            err(f"{name}: port {port} not published")
        expect = {"SHOP_LISTEN_HOST": "0.0.0.0", f"{prefix}_PORT": str(port), "SCYLLA_NODES": "cassandra:9042",
                  "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}
        for other, (oport, oprefix) in SHOP.items():
            expect[f"{oprefix}_URL"] = f"http://{other}:{oport}"
        for k, v in expect.items():
            if str(env.get(k)) != v:
                err(f"{name}: {k}={env.get(k)!r}, want {v!r}")
        if "JWT_SECRET" in env or "jwt_secret" not in svc.get("secrets", []):
            err(f"{name}: JWT_SECRET must come from the jwt_secret secret, not the environment")
        # The service kit's table (services/shop-common/src/service.rs) names each service's
        # port variable; every service reads its port through it.
        kit = open(os.path.join(ROOT, "services", "shop-common", "src", "service.rs")).read()
        if not re.search(rf'name: "{name}",[^}}]*port_env: "{prefix}_PORT"', kit):
            err(f"{name}: the service kit does not read {prefix}_PORT for it")
    if "/run/secrets/jwt_secret" not in dockerfile:
        err("Dockerfile entrypoint does not read the jwt_secret secret")
    if not {4317, 4318, 16686, 14269} <= ports_of(services["jaeger"]):
        err(f"jaeger ports {ports_of(services['jaeger'])}")
    if 9042 not in ports_of(services["cassandra"]) or 9103 not in ports_of(services["cassandra"]):
        err("cassandra must serve CQL 9042 and MCAC 9103")

    # --- every Prometheus target is a compose service exposing that port
    prom = yaml.safe_load(open(os.path.join(MONITORING, "prometheus/prometheus.yml")))
    jobs = {}
    for job in prom["scrape_configs"]:
        for sc in job["static_configs"]:
            for target in sc["targets"]:
                host, port = target.rsplit(":", 1)
                jobs[job["job_name"]] = host
                if host not in services or int(port) not in ports_of(services[host]):
                    err(f"prometheus job {job['job_name']}: {target} is not a compose service port")
    for name in SHOP:
        if jobs.get(name) != name:
            err(f"no prometheus job named {name} scraping {name}")
    for am_t in prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]:
        host, port = am_t.rsplit(":", 1)
        if host != "alertmanager" or int(port) not in ports_of(services["alertmanager"]):
            err(f"alerting target {am_t}")
    for rule_file in prom["rule_files"]:
        rule_mounts = [v for v in services["prometheus"]["volumes"] if rule_file in v]
        if not rule_mounts or not rule_mounts[0].split(":")[1].endswith("/" + rule_file):
            err(f"{rule_file} is not mounted where prometheus.yml's rule_files expects it")
    if "--enable-feature=exemplar-storage" not in services["prometheus"]["command"]:
        err("prometheus without exemplar storage: the latency panels' exemplars would be empty")

    # --- nginx: every template placeholder set; upstreams and status port agree
    template = open(os.path.join(MONITORING, "nginx/gateway.conf.template")).read()
    placeholders = set(re.findall(r"\$\{([A-Z_]+)\}", template))
    nenv = services["nginx"]["environment"]
    if placeholders - set(nenv):
        err(f"nginx env lacks {placeholders - set(nenv)}")
    for name, (port, prefix) in SHOP.items():
        if nenv.get(f"{prefix}_UPSTREAM") != f"{name}:{port}":
            err(f"nginx {prefix}_UPSTREAM={nenv.get(f'{prefix}_UPSTREAM')}")
    if int(nenv["STATUS_LISTEN"]) not in ports_of(services["nginx"]):
        err("nginx status port not exposed")
    if f"http://nginx:{nenv['STATUS_LISTEN']}/stub_status" not in " ".join(services["nginx-exporter"]["command"]):
        err("nginx-exporter does not scrape nginx's stub_status port")
    mcmd = " ".join(services["mtail"]["command"])
    if nenv["ACCESS_LOG"] not in mcmd or "-emit_prog_label=false" not in mcmd:
        err("mtail does not read the gateway's access log without prog label")

    # --- Grafana datasources point at compose services
    ds = yaml.safe_load(open(os.path.join(MONITORING, "grafana/provisioning/datasources/datasources.yml")))
    for d in ds["datasources"]:
        m = re.match(r"http://([a-z-]+):(\d+)", d["url"])
        if not m or m.group(1) not in services or int(m.group(2)) not in ports_of(services[m.group(1)]):
            err(f"grafana datasource {d['name']} url {d['url']}")
    # --- Locust: the locustfile's exporter port is the scraped one
    lenv = services["locust"]["environment"]
    if jobs.get("locust") != "locust" or int(lenv["LOCUST_METRICS_PORT"]) not in ports_of(services["locust"]):
        err("locust metrics port not scraped/exposed")

    if errors:
        fail("docker-compose.yml:\n  " + "\n  ".join(errors))
    ok(f"docker-compose.yml: {len(services)} services, {mounts} bind mounts exist, secrets git-ignored, "
       "ports and environment agree with prometheus.yml, the nginx template, Grafana datasources and the crates")


if __name__ == "__main__":
    main()
