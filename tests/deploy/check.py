#!/usr/bin/env python3
"""Checks of the production files that their schemas cannot make (run by `./infra/dev.sh test`, check_deploy, with
the deployment checks' Python, which has PyYAML):

  check.py <infra dir> <rendered overlay.yaml>...

- compose: every fixed container address is inside its network's subnet and outside the range Docker hands out
  addresses from (`ip_range`, which must then be declared), so that no other container can take it first;
- Prometheus: every `job="…"` the rules select is a job that prometheus.yml (compose) scrapes, and one that
  kubernetes.yml's relabelling gives the pods of each rendered overlay, one target per pod, on the annotated port;
- Kubernetes, per rendered overlay: an in-cluster host named in the ConfigMaps' URLs is a Service of the overlay;
  the Secret a Job takes keys from is not loaded by a Deployment, its keys are in that Secret's example file, and
  no Secret a Deployment loads whole carries the owner role's keys; a readiness probe on /readyz waits at least 3 s.
"""

import ipaddress
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

OWNER_KEYS = {"DATABASE_URL", "APP_ROLE_PASSWORD"}
problems = []


def fail(message):
    problems.append(message)


def rule_jobs(infra):
    """The job names the rules select (`job="…"` in an expression)."""
    rules = yaml.safe_load((infra / "prometheus/rules.yml").read_text())
    jobs = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            jobs.update(re.findall(r'\bjob="([^"]+)"', rule["expr"]))
    if not jobs:
        fail("rules.yml: no rule selects a job")
    return jobs


def check_compose(infra):
    compose = yaml.safe_load((infra / "compose/compose.yml").read_text())
    networks = {}
    for name, network in (compose.get("networks") or {}).items():
        for pool in ((network or {}).get("ipam") or {}).get("config") or []:
            networks[name] = (
                ipaddress.ip_network(pool["subnet"]),
                ipaddress.ip_network(pool["ip_range"]) if "ip_range" in pool else None,
            )
    for service, spec in compose["services"].items():
        attached = spec.get("networks") or {}
        if not isinstance(attached, dict):
            continue
        for name, settings in attached.items():
            address = (settings or {}).get("ipv4_address")
            if address is None:
                continue
            where = f"compose.yml: {service}'s address {address}"
            if name not in networks:
                fail(f"{where}: network {name} declares no subnet")
                continue
            subnet, automatic = networks[name]
            address = ipaddress.ip_address(address)
            if address not in subnet:
                fail(f"{where} is outside the subnet {subnet}")
            if automatic is None:
                fail(f"{where}: network {name} has no ip_range, so Docker may give the address to another container")
            elif address in automatic:
                fail(f"{where} is inside the ip_range {automatic}, which Docker gives to other containers")


def relabel(labels, configs):
    """Prometheus relabelling (keep, drop, replace) of one target's labels; None when it is dropped."""
    labels = dict(labels)
    for config in configs:
        value = config.get("separator", ";").join(labels.get(s, "") for s in config.get("source_labels", []))
        match = re.fullmatch(config.get("regex", "(.*)"), value)
        action = config.get("action", "replace")
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            replacement = re.sub(r"\$\{?(\d+)\}?", r"\\\1", config.get("replacement", "$1"))
            result = match.expand(replacement)
            if result:
                labels[config["target_label"]] = result
            else:
                labels.pop(config["target_label"], None)
        elif action not in ("keep", "drop", "replace"):
            fail(f"check.py does not know the relabel action {action}")
    return labels


def sanitized(name):
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def check_prometheus(infra, jobs, overlays):
    compose = yaml.safe_load((infra / "prometheus/prometheus.yml").read_text())
    scraped = {c["job_name"] for c in compose["scrape_configs"]}
    for job in sorted(jobs - scraped):
        fail(f'prometheus.yml: the rules select job="{job}", which no scrape configuration names')

    kubernetes = yaml.safe_load((infra / "prometheus/kubernetes.yml").read_text())
    for overlay, docs in overlays.items():
        found = {}
        for doc in docs:
            if doc["kind"] != "Deployment":
                continue
            pod = doc["spec"]["template"]
            meta = {"__meta_kubernetes_namespace": doc["metadata"].get("namespace", "default"),
                    "__meta_kubernetes_pod_name": doc["metadata"]["name"] + "-0"}
            for key, value in (pod["metadata"].get("labels") or {}).items():
                meta[f"__meta_kubernetes_pod_label_{sanitized(key)}"] = value
            for key, value in (pod["metadata"].get("annotations") or {}).items():
                meta[f"__meta_kubernetes_pod_annotation_{sanitized(key)}"] = value
            wanted = (pod["metadata"].get("annotations") or {}).get("prometheus.io/scrape") == "true"
            targets = []
            for config in kubernetes["scrape_configs"]:
                if not any(sd.get("role") == "pod" for sd in config.get("kubernetes_sd_configs", [])):
                    continue
                for container in pod["spec"]["containers"]:
                    for port in container.get("ports", []):
                        labels = dict(meta, __address__=f"10.0.0.1:{port['containerPort']}",
                                      __meta_kubernetes_pod_container_port_name=port.get("name", ""),
                                      __meta_kubernetes_pod_container_port_number=str(port["containerPort"]))
                        labels.setdefault("job", config["job_name"])
                        labels = relabel(labels, config.get("relabel_configs", []))
                        if labels is not None:
                            targets.append(labels)
            name = doc["metadata"]["name"]
            if not wanted:
                if targets:
                    fail(f"{overlay}: kubernetes.yml scrapes {name}, which is not annotated prometheus.io/scrape")
                continue
            port = pod["metadata"]["annotations"].get("prometheus.io/port")
            if [t["__address__"] for t in targets] != [f"10.0.0.1:{port}"]:
                fail(f"{overlay}: kubernetes.yml should scrape each {name} pod once, on port {port}: "
                     f"{[t['__address__'] for t in targets]}")
            for target in targets:
                found.setdefault(target["job"], name)
        for job in sorted(jobs - set(found)):
            fail(f'{overlay}: the rules select job="{job}", which kubernetes.yml gives no pod (jobs: {sorted(found)})')


def env_example_keys(infra):
    """Secret name -> its keys, from infra/k8s/base/*.env.example (each names its Secret on its first line)."""
    secrets = {}
    for path in sorted((infra / "k8s/base").glob("*.env.example")):
        text = path.read_text()
        named = re.search(r"The keys of the `([a-z0-9-]+)` Secret", text)
        if not named:
            fail(f"{path.name}: its first line names no Secret")
            continue
        secrets[named.group(1)] = {
            line.split("=", 1)[0] for line in text.splitlines() if re.match(r"[A-Z0-9_]+=", line)
        }
    return secrets


def check_kubernetes(infra, overlays):
    examples = env_example_keys(infra)
    for overlay, docs in overlays.items():
        services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
        for doc in docs:
            if doc["kind"] != "ConfigMap":
                continue
            for key, value in (doc.get("data") or {}).items():
                if "://" not in value:
                    continue
                host = urlsplit(value).hostname or ""
                if host and "." not in host and host != "localhost" and host not in services:
                    fail(f"{overlay}: {key}={value} names the host {host}, but no Service {host} is deployed")

        loaded, referenced = {}, {}
        for doc in docs:
            spec = (doc.get("spec") or {}).get("template", {}).get("spec")
            if spec is None:
                continue
            workload = f"{doc['kind']} {doc['metadata']['name']}"
            for container in spec.get("containers", []):
                for source in container.get("envFrom", []):
                    if "secretRef" in source:
                        loaded.setdefault(source["secretRef"]["name"], []).append(workload)
                for env in container.get("env", []):
                    ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        referenced.setdefault(ref["name"], set()).add(ref["key"])
                        if doc["kind"] == "Deployment" and env["name"] in OWNER_KEYS:
                            fail(f"{overlay}: {workload} is given {env['name']}, which only the migration Job needs")
                probe = container.get("readinessProbe") or {}
                if (probe.get("httpGet") or {}).get("path") == "/readyz" and probe.get("timeoutSeconds", 1) < 3:
                    fail(f"{overlay}: {workload}'s readiness probe gives /readyz less than 3 s (it may wait 2 s on Redis)")
        for name, keys in referenced.items():
            if name in loaded:
                fail(f"{overlay}: the Secret {name} is loaded whole by {loaded[name]}, not only by key")
            if name not in examples:
                fail(f"{overlay}: the Secret {name} has no infra/k8s/base/*.env.example")
            elif keys - examples[name]:
                fail(f"{overlay}: {sorted(keys - examples[name])} are not in the example of the Secret {name}")
        for name, workloads in loaded.items():
            if name not in examples:
                fail(f"{overlay}: the Secret {name} has no infra/k8s/base/*.env.example")
            elif examples[name] & OWNER_KEYS:
                fail(f"{overlay}: {workloads} load the Secret {name}, which has {sorted(examples[name] & OWNER_KEYS)}")


def main():
    infra = Path(sys.argv[1])
    overlays = {}
    for rendered in sys.argv[2:]:
        overlays[Path(rendered).stem] = [d for d in yaml.safe_load_all(Path(rendered).read_text()) if d]
    if not overlays:
        sys.exit("check.py <infra dir> <rendered overlay.yaml>...")
    check_compose(infra)
    check_prometheus(infra, rule_jobs(infra), overlays)
    check_kubernetes(infra, overlays)
    for problem in problems:
        print(problem, file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
