#!/usr/bin/env python3
"""Checks what the compose schema cannot: references inside infra/docker-compose.yml.

- every `depends_on` names a defined service, with a known condition, and a
  `service_healthy` dependency has a healthcheck;
- every `${VAR}` / `$VAR` the file interpolates is documented in infra/.env.example
  (and every variable there is used);
- every variable a MeetEase container sets is one a MeetEase binary reads, and
  every *_URL(S) variable its service's crate declares is set;
- each MeetEase service's port variable, HEALTH_PORT and healthcheck agree, and
  Prometheus (infra/prometheus/prometheus.yml) scrapes it on that port;
- every network and named volume a service uses is declared.

Prints one line per problem and exits 1 when there is any.
"""

import pathlib
import re
import sys

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import workspace  # noqa: E402

INFRA = pathlib.Path(__file__).resolve().parents[1]
COMPOSE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"
PROMETHEUS = INFRA / "prometheus" / "prometheus.yml"

CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
# $$ is an escaped dollar; ${NAME...} and $NAME interpolate.
INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolated(text):
    names = set()
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for match in INTERPOLATION.finditer(line):
            name = match.group(1) or match.group(2)
            if name:
                names.add(name)
    return names


def env_example_keys(text):
    keys = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, _ = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise SystemExit(f"{ENV_EXAMPLE.name}:{number}: not KEY=VALUE: {line!r}")
        keys.add(key)
    return keys


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def healthcheck_port(service):
    test = (service.get("healthcheck") or {}).get("test") or []
    if isinstance(test, list) and len(test) >= 3 and test[1] == "meetease-healthcheck":
        return test[2]
    return None


def main():
    global COMPOSE, ENV_EXAMPLE, PROMETHEUS
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compose", type=pathlib.Path, default=COMPOSE)
    parser.add_argument("--env-example", type=pathlib.Path, default=ENV_EXAMPLE)
    parser.add_argument("--prometheus", type=pathlib.Path, default=PROMETHEUS)
    args = parser.parse_args()
    COMPOSE, ENV_EXAMPLE, PROMETHEUS = args.compose, args.env_example, args.prometheus
    text = COMPOSE.read_text()
    compose = yaml.safe_load(text)
    services = compose.get("services") or {}
    errors, notes = [], []

    # depends_on
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {dep: {"condition": "service_started"} for dep in deps}
        for dep, spec in deps.items():
            if dep not in services:
                errors.append(f"services.{name}.depends_on: `{dep}` is not a service in {COMPOSE.name}")
                continue
            if dep == name:
                errors.append(f"services.{name}.depends_on: depends on itself")
            condition = (spec or {}).get("condition", "service_started")
            if condition not in CONDITIONS:
                errors.append(f"services.{name}.depends_on.{dep}: unknown condition `{condition}`")
            health = services[dep].get("healthcheck") or {}
            if condition == "service_healthy" and (not health.get("test") or health.get("disable")):
                errors.append(f"services.{name}.depends_on.{dep}: waits for it to be healthy, but `{dep}` has no healthcheck")

    # a cycle in depends_on would stop `up`
    state = {}
    def visit(node, path):
        if state.get(node) == "done":
            return
        if state.get(node) == "active":
            errors.append("depends_on cycle: " + " -> ".join(path + [node]))
            return
        state[node] = "active"
        deps = services.get(node, {}).get("depends_on") or {}
        for dep in deps:
            if dep in services:
                visit(dep, path + [node])
        state[node] = "done"
    for name in services:
        visit(name, [])

    # ${VAR} against .env.example
    documented = env_example_keys(ENV_EXAMPLE.read_text())
    used = interpolated(text)
    for var in sorted(used - documented):
        errors.append(f"{COMPOSE.name} uses ${{{var}}}, which {ENV_EXAMPLE.name} does not define")
    for var in sorted(documented - used):
        errors.append(f"{ENV_EXAMPLE.name} defines {var}, which {COMPOSE.name} never uses")

    # networks and volumes
    declared_networks = set((compose.get("networks") or {}).keys()) | {"default"}
    declared_volumes = set((compose.get("volumes") or {}).keys())
    for name, service in services.items():
        nets = service.get("networks") or []
        for net in (nets.keys() if isinstance(nets, dict) else nets):
            if net not in declared_networks:
                errors.append(f"services.{name}.networks: `{net}` is not declared under networks")
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source and not source.startswith((".", "/", "~")) and source not in declared_volumes:
                errors.append(f"services.{name}.volumes: `{source}` is not declared under volumes")
            if source.startswith("./") and not (COMPOSE.parent / source).exists():
                errors.append(f"services.{name}.volumes: {source} does not exist in infra/")

    # MeetEase containers: variables, ports, scraping
    declared = workspace.declared_env()
    binaries = workspace.workspace_binaries()
    scraped = set()
    for job in (yaml.safe_load(PROMETHEUS.read_text()) or {}).get("scrape_configs", []):
        for static in job.get("static_configs", []):
            scraped.update(static.get("targets", []))
    meetease = {}
    for name, service in services.items():
        command = service.get("command") or []
        if isinstance(command, str):
            command = command.split()
        if not command or not str(command[0]).startswith("meetease"):
            continue
        meetease[name] = command[0]
        if command[0] not in binaries:
            errors.append(f"services.{name}.command: `{command[0]}` is not a [[bin]] of the workspace")
        env = environment(service)
        more_errors, more_notes = workspace.env_problems(f"services.{name}.environment", env.keys(), declared)
        errors += more_errors
        notes += more_notes
        service_name = command[0].removeprefix("meetease-")
        if service_name in workspace.SERVICES:
            for var in sorted(workspace.service_urls(service_name) - set(env)):
                errors.append(f"services.{name}.environment: {var} is not set (meetease-{service_name} reads it; its default is wrong in a container)")
        port_vars = [key for key in env if key.endswith("_PORT") and key not in {"HEALTH_PORT", "SFU_UDP_PORT"}]
        if len(port_vars) != 1:
            errors.append(f"services.{name}: sets {port_vars or 'no'} port variable(s); expected exactly one <SERVICE>_PORT")
            continue
        port = str(env[port_vars[0]])
        if str(env.get("HEALTH_PORT")) != port:
            errors.append(f"services.{name}: HEALTH_PORT {env.get('HEALTH_PORT')} differs from {port_vars[0]} {port}")
        if healthcheck_port(service) != port:
            errors.append(f"services.{name}: the healthcheck probes port {healthcheck_port(service)}, the service listens on {port}")
        if f"{name}:{port}" not in scraped:
            errors.append(f"{PROMETHEUS.name}: no scrape target {name}:{port} for services.{name}")
    expected_bins = {b for b in binaries if b.startswith("meetease-")}
    missing = expected_bins - set(meetease.values())
    if missing:
        errors.append(f"{COMPOSE.name}: no service runs {sorted(missing)}")

    for note in notes:
        print(f"note: {note}")
    for error in errors:
        print(f"error: {error}")
    if errors:
        print(f"compose_refs: {len(errors)} problem(s) in infra/docker-compose.yml")
        return 1
    print(f"compose_refs: {len(services)} services, {len(used)} variables: every reference resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
