"""What the Rust workspace declares, for the infra checks: its binaries ([[bin]]
targets, from `cargo metadata`) and the environment variables its binaries read
(every clap `env = "NAME"` in the sources)."""

import json
import pathlib
import re
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]

# Variables read by the image's own scripts (infra/docker/*.sh), not by Rust code.
IMAGE_ENV = {"HEALTH_PORT", "SFU_DRAIN_SECONDS"}

# Settings the infra already passes for work in progress elsewhere: name -> why. An
# entry that the sources now declare is reported, so the list only ever shrinks.
PENDING_ENV: dict[str, str] = {}


def metadata():
    out = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def workspace_binaries(meta=None):
    meta = meta or metadata()
    return {
        target["name"]
        for package in meta["packages"]
        for target in package["targets"]
        if "bin" in target["kind"]
    }


ENV_ATTR = re.compile(r'\benv\s*=\s*"([A-Z][A-Z0-9_]*)"')


def declared_env():
    names = set()
    for path in REPO.glob("*/src/**/*.rs"):
        if "target" in path.parts:
            continue
        names.update(ENV_ATTR.findall(path.read_text(encoding="utf-8", errors="replace")))
    return names


def env_problems(where, names, declared):
    """Errors for variable names no binary reads; notes for pending ones now declared."""
    errors, notes = [], []
    for name in sorted(names):
        if name in declared or name in IMAGE_ENV:
            if name in PENDING_ENV and name in declared:
                notes.append(f"{name} is now declared by the sources: drop it from PENDING_ENV in infra/checks/workspace.py")
            continue
        if name in PENDING_ENV:
            notes.append(f"{where}: {name} is not read by any binary yet ({PENDING_ENV[name]})")
            continue
        errors.append(f"{where}: sets {name}, which no MeetEase binary reads (a typo? the flags are in each */src/main.rs)")
    return errors, notes


SERVICES = ["gateway", "auth", "users", "signaling", "notify", "analytics", "sfu"]


def service_urls(service):
    """The *_URL / *_URLS variables a service's own crate declares: where it finds
    the other services. Their defaults point at 127.0.0.1, which is wrong in any
    container, so a deployment must set every one of them."""
    names = set()
    for path in (REPO / service / "src").glob("**/*.rs"):
        names.update(ENV_ATTR.findall(path.read_text(encoding="utf-8", errors="replace")))
    return {name for name in names if name.endswith(("_URL", "_URLS"))}
