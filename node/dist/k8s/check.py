#!/usr/bin/env python3
"""Consistency checks of node/dist/k8s/ghmesh.yaml (no cluster needed; needs PyYAML).

The manifest has to agree with itself in ways kubectl would not notice until runtime:
the bootstrap name is the headless Service in the right namespace, with the p2p port and
no /p2p part; the --api-host names are the API Service's; selectors match the pod
labels; the secret file and the data dir sit on mounted volumes (the root filesystem is
read-only); the pod runs as non-root with the usual restrictions and resource limits.
"""

import pathlib
import re
import sys

import yaml

MANIFEST = pathlib.Path(__file__).with_name("ghmesh.yaml")


def main() -> int:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    problems = []

    def check(cond, message):
        if not cond:
            problems.append(message)

    (ds,) = by_kind["DaemonSet"]
    ns = ds["metadata"]["namespace"]
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    pod = ds["spec"]["template"]
    labels = pod["metadata"]["labels"]
    check(ds["spec"]["selector"]["matchLabels"].items() <= labels.items(), "DaemonSet selector does not match its pod labels")
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    flags = {}
    for a in args:
        key, _, value = a.partition("=")
        flags.setdefault(key, []).append(value)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    for name, svc in services.items():
        check(svc["metadata"]["namespace"] == ns, f"Service {name} is not in namespace {ns}")
        check(svc["spec"]["selector"].items() <= labels.items(), f"Service {name} selects no ghmesh pod")
        for p in svc["spec"]["ports"]:
            check(p["targetPort"] in ports, f"Service {name} targets unknown port {p['targetPort']}")

    peers = [s for s in services.values() if s["spec"].get("clusterIP") == "None"]
    check(len(peers) == 1, "expected one headless Service for peer discovery")
    if peers:
        peer = peers[0]
        (pport,) = peer["spec"]["ports"]
        check(pport.get("protocol", "TCP") == "TCP", "the peer port must be TCP")
        want = f"/dns4/{peer['metadata']['name']}.{ns}.svc.cluster.local/tcp/{pport['port']}"
        check(flags.get("--bootstrap") == [want], f"--bootstrap must be {want}, got {flags.get('--bootstrap')}")
        check(peer["spec"].get("publishNotReadyAddresses") is True, "the headless Service must publish not-ready pods")
        check(ports.get(pport["targetPort"]) == pport["port"], "the peer Service port differs from the container port")
    check(all("/p2p/" not in b for b in flags.get("--bootstrap", [])), "DNS bootstrap takes no /p2p part")
    listen = flags.get("--listen", [""])[0]
    check(re.fullmatch(r"/ip4/0\.0\.0\.0/tcp/(\d+)", listen) and int(listen.rsplit("/", 1)[1]) == ports.get("p2p"),
          f"--listen {listen} must listen on all interfaces on the p2p port")

    api = [s for s in services.values() if s["spec"].get("internalTrafficPolicy") == "Local"]
    check(len(api) == 1, "expected one node-local (internalTrafficPolicy: Local) API Service")
    if api:
        name = api[0]["metadata"]["name"]
        want_hosts = {name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"}
        check(want_hosts <= set(flags.get("--api-host", [])), f"--api-host must admit {sorted(want_hosts)}")
        check(flags.get("--api") == [f"0.0.0.0:{ports.get('api')}"], "--api must bind the api container port")
    check(not pod["spec"].get("hostNetwork"), "the pod must not use the host network")

    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}

    def volume_of(path):
        best = max((m for m in mounts if path.startswith(m.rstrip("/") + "/")), key=len, default=None)
        return volumes.get(mounts[best]) if best else None

    secret_file = flags.get("--secret-file", [""])[0]
    vol = volume_of(secret_file)
    check(vol is not None and "secret" in vol, f"--secret-file {secret_file} is not on a Secret volume")
    if vol and "secret" in vol:
        items = {i["path"] for i in vol["secret"].get("items", [])}
        check(not items or secret_file.rsplit("/", 1)[1] in items, "the secret file is not among the Secret's items")
    data_dir = flags.get("--data-dir", [""])[0]
    check(volume_of(data_dir) is not None, f"--data-dir {data_dir} is not on a volume (the root filesystem is read-only)")

    psc = pod["spec"].get("securityContext", {})
    csc = container.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, "the pod must run as non-root")
    check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
    check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "all capabilities must be dropped")
    check("memory" in container.get("resources", {}).get("limits", {}), "a memory limit is required")
    for probe in ("readinessProbe", "livenessProbe"):
        headers = {h["name"].lower(): h["value"] for h in container.get(probe, {}).get("httpGet", {}).get("httpHeaders", [])}
        check(headers.get("host") in ("localhost", "127.0.0.1"), f"{probe} must send a loopback Host header")

    for p in problems:
        print(f"{MANIFEST}: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"{MANIFEST.name}: ok ({len(docs)} objects)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
