#!/usr/bin/env python3
"""Checks what the Kubernetes schemas cannot, on one rendered overlay
(`kubectl kustomize infra/k8s/overlays/<name>`), read from a file or stdin.

- every ConfigMap and Secret a pod reads exists in the render (and has the key),
  except Secrets listed with --external (created by the operator);
- every Service, PodDisruptionBudget and HorizontalPodAutoscaler selects or targets
  a workload that exists, and a Service's target port is a port of that pod;
- every MeetEase container runs a [[bin]] of the workspace, is probed on /ready
  (readiness) and /health (liveness) on its own port, runs as non-root with a
  read-only root file system, has CPU and memory requests and limits, and sets
  only variables a MeetEase binary reads, including every *_URL(S) variable its
  service's crate declares;
- SFU_URLS names exactly the SFU StatefulSet's pods (sfu-0 ... sfu-N-1);
- the Ingress routes to a Service port that exists.

Prints one line per problem and exits 1 when there is any. With --binaries it also
prints the binaries the containers run (one per line) for check-dockerfile.sh.
"""

import argparse
import pathlib
import re
import sys

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import workspace  # noqa: E402

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("rendered", help="rendered manifests (- for stdin)")
    parser.add_argument("--external", action="append", default=[],
                        help="NAME[=KEYS_FILE]: a Secret the operator creates; KEYS_FILE (KEY=VALUE lines) lists its keys")
    parser.add_argument("--name", default="overlay")
    args = parser.parse_args()
    text = sys.stdin.read() if args.rendered == "-" else pathlib.Path(args.rendered).read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    external_keys = {}
    for spec in args.external:
        name, _, keys_file = spec.partition("=")
        keys = None
        if keys_file:
            keys = {line.split("=", 1)[0].strip() for line in pathlib.Path(keys_file).read_text().splitlines()
                    if "=" in line and not line.lstrip().startswith("#")}
        external_keys[name] = keys
    args.external = list(external_keys)
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    errors, notes = [], []
    where = args.name

    configmaps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    workloads = {name: doc for kind in WORKLOADS for name, doc in by_kind.get(kind, {}).items()}
    declared = workspace.declared_env()
    binaries = workspace.workspace_binaries()
    used_binaries = set()

    def labels_match(selector, labels):
        """A label selector (matchLabels/matchExpressions) or a Service's plain map."""
        if "matchLabels" in selector or "matchExpressions" in selector:
            plain, expressions = selector.get("matchLabels") or {}, selector.get("matchExpressions") or []
        else:
            plain, expressions = selector, []
        if any(labels.get(key) != value for key, value in plain.items()):
            return False
        for expr in expressions:
            present = expr["key"] in labels
            value = labels.get(expr["key"])
            if expr["operator"] == "In" and value not in expr["values"]:
                return False
            if expr["operator"] == "NotIn" and present and value in expr["values"]:
                return False
            if expr["operator"] == "Exists" and not present:
                return False
            if expr["operator"] == "DoesNotExist" and present:
                return False
        return True

    def config_value(name, key):
        cm = configmaps.get(name)
        return (cm or {}).get("data", {}).get(key)

    for wname, workload in workloads.items():
        kind = workload["kind"]
        pod = workload["spec"]["template"]
        spec = pod["spec"]
        if not labels_match(workload["spec"]["selector"], pod["metadata"].get("labels", {})):
            errors.append(f"{where}: {kind}/{wname}: its selector does not match its own pod labels")
        meetease = pod["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "meetease"
        for container in spec.get("containers", []):
            cname = f"{kind}/{wname}/{container['name']}"
            env_names = set()
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    ref = source["configMapRef"]["name"]
                    if ref not in configmaps:
                        errors.append(f"{where}: {cname} reads ConfigMap {ref}, which is not rendered")
                    else:
                        env_names.update(configmaps[ref].get("data", {}).keys())
                if "secretRef" in source:
                    ref = source["secretRef"]["name"]
                    if ref not in secrets and ref not in args.external:
                        errors.append(f"{where}: {cname} reads Secret {ref}, which is neither rendered nor --external")
            for var in container.get("env", []):
                env_names.add(var["name"])
                value_from = var.get("valueFrom") or {}
                for ref_kind, store in (("secretKeyRef", secrets), ("configMapKeyRef", configmaps)):
                    ref = value_from.get(ref_kind)
                    if not ref:
                        continue
                    if ref["name"] in store:
                        obj = store[ref["name"]]
                        keys = set((obj.get("data") or {}).keys()) | set((obj.get("stringData") or {}).keys())
                        if ref["key"] not in keys and not ref.get("optional"):
                            errors.append(f"{where}: {cname}: {var['name']} reads key {ref['key']} missing from {ref_kind[:-6]} {ref['name']}")
                    elif ref_kind == "secretKeyRef" and ref["name"] in external_keys:
                        keys = external_keys[ref["name"]]
                        if keys is not None and ref["key"] not in keys:
                            errors.append(f"{where}: {cname}: {var['name']} reads key {ref['key']} of Secret {ref['name']}, which its keys file does not list")
                    else:
                        errors.append(f"{where}: {cname}: {var['name']} reads {ref_kind[:-6]} {ref['name']}, which is not rendered")
            if not meetease:
                continue
            command = container.get("command") or []
            if not command:
                errors.append(f"{where}: {cname}: no command (which binary runs?)")
                continue
            used_binaries.add(command[0])
            if command[0] not in binaries:
                errors.append(f"{where}: {cname}: runs `{command[0]}`, not a [[bin]] of the workspace")
            service = command[0].removeprefix("meetease-")
            more_errors, more_notes = workspace.env_problems(f"{where}: {cname}", env_names, declared)
            errors += more_errors
            notes += more_notes
            if service in workspace.SERVICES:
                for var in sorted(workspace.service_urls(service) - env_names):
                    errors.append(f"{where}: {cname}: {var} is not set (meetease-{service} reads it; its default is wrong in a cluster)")
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            port_var = f"{service.upper()}_PORT"
            own = [v for v in container.get("env", []) if v["name"] == port_var]
            if own and str(own[0].get("value")) != str(ports.get("http")):
                errors.append(f"{where}: {cname}: {port_var}={own[0].get('value')} but the http port is {ports.get('http')}")
            for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
                get = (container.get(probe) or {}).get("httpGet") or {}
                if get.get("path") != path or get.get("port") not in ("http", ports.get("http")):
                    errors.append(f"{where}: {cname}: {probe} must be GET {path} on the http port")
            resources = container.get("resources") or {}
            for part in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    if res not in (resources.get(part) or {}):
                        errors.append(f"{where}: {cname}: no {res} {part[:-1]}")
            pod_sc = spec.get("securityContext") or {}
            sc = container.get("securityContext") or {}
            if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))):
                errors.append(f"{where}: {cname}: runAsNonRoot is not set")
            if sc.get("allowPrivilegeEscalation") is not False or not sc.get("readOnlyRootFilesystem"):
                errors.append(f"{where}: {cname}: needs allowPrivilegeEscalation: false and readOnlyRootFilesystem: true")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                errors.append(f"{where}: {cname}: must drop ALL capabilities")
            if not (container.get("lifecycle") or {}).get("preStop"):
                errors.append(f"{where}: {cname}: no preStop hook (graceful drain)")
            if service == "signaling":
                for source in container.get("envFrom", []):
                    ref = (source.get("configMapRef") or {}).get("name")
                    urls = config_value(ref, "SFU_URLS") if ref else None
                    if urls is None:
                        continue
                    sfu = by_kind.get("StatefulSet", {}).get("sfu")
                    if not sfu:
                        errors.append(f"{where}: SFU_URLS is set but there is no StatefulSet sfu")
                        continue
                    replicas = sfu["spec"].get("replicas", 1)
                    want = [f"http://sfu-{i}.{sfu['spec']['serviceName']}:8006" for i in range(replicas)]
                    if urls.split(",") != want:
                        errors.append(f"{where}: SFU_URLS is {urls!r}; the {replicas} SFU pods are {','.join(want)!r}")

    for sname, service in by_kind.get("Service", {}).items():
        selector = service["spec"].get("selector")
        if not selector:
            continue
        targets = [w for w in workloads.values() if labels_match(selector, w["spec"]["template"]["metadata"].get("labels", {}))]
        if not targets:
            errors.append(f"{where}: Service/{sname} selects no pods")
            continue
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            ok = any(
                target in (p.get("name"), p["containerPort"])
                for w in targets for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
            )
            if not ok:
                errors.append(f"{where}: Service/{sname}: targetPort {target} is no port of the pods it selects")

    for pname, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        if not any(labels_match(pdb["spec"]["selector"], w["spec"]["template"]["metadata"].get("labels", {})) for w in workloads.values()):
            errors.append(f"{where}: PodDisruptionBudget/{pname} selects no pods")
    for hname, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
        ref = hpa["spec"]["scaleTargetRef"]
        target = by_kind.get(ref["kind"], {}).get(ref["name"])
        if not target:
            errors.append(f"{where}: HorizontalPodAutoscaler/{hname} targets {ref['kind']}/{ref['name']}, which is not rendered")
        elif "replicas" in target["spec"]:
            errors.append(f"{where}: {ref['kind']}/{ref['name']} sets replicas although HorizontalPodAutoscaler/{hname} owns them")
        if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            errors.append(f"{where}: HorizontalPodAutoscaler/{hname}: minReplicas > maxReplicas")
    for iname, ingress in by_kind.get("Ingress", {}).items():
        for rule in ingress["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                svc = by_kind.get("Service", {}).get(backend["name"])
                port = backend["port"].get("name") or backend["port"].get("number")
                if not svc or not any(port in (p.get("name"), p["port"]) for p in svc["spec"]["ports"]):
                    errors.append(f"{where}: Ingress/{iname} routes to {backend['name']}:{port}, which does not exist")

    for note in sorted(set(notes)):
        print(f"note: {note}")
    for error in errors:
        print(f"error: {error}")
    print("binaries: " + " ".join(sorted(used_binaries)))
    if errors:
        print(f"k8s_refs: {len(errors)} problem(s) in {where}")
        return 1
    print(f"k8s_refs: {where}: {len(docs)} objects, every reference resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
