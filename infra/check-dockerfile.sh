#!/usr/bin/env bash
# Checks that infra/Dockerfile builds what `cargo build --release` builds:
#
#  1. its cargo commands are exactly the expected ones below (the release profile,
#     the whole workspace, the lock file as committed; no features, targets or
#     flags a developer's `cargo build --release --workspace` would not use), and
#     no ENV or ARG changes the build (RUSTFLAGS, CARGO_PROFILE_*, CARGO_BUILD_*);
#  2. the dependency layer copies every workspace member's Cargo.toml,
#     infra/docker/dummy-sources.sh creates exactly the lib.rs/main.rs files the
#     members really have, and that layer (its COPY lines replayed into an empty
#     folder) resolves with `cargo metadata --locked --offline`;
#  3. the image takes every [[bin]] of the workspace from target/release, and every
#     binary that infra/docker-compose.yml and infra/k8s/ run is one of them; every
#     *-sys crate in Cargo.lock is static, bundled or not for Linux (the slim runtime
#     image has no shared libraries beyond libc);
#  4. the runtime stage is debian *-slim, runs as a numeric non-root user, has a
#     HEALTHCHECK, and neither stage bakes in a secret; .dockerignore keeps out
#     .env, .git and target/.
#
# It reads the workspace with `cargo metadata --no-deps --offline` (no build).
set -euo pipefail
cd "$(dirname "$0")/.."

# The cargo commands of the Dockerfile, in order: the dependency layer (fetch, then
# build against empty sources), then the real build. `--locked` is the only flag
# beyond the documented `cargo build --release --workspace`: the image must build
# the Cargo.lock that was committed.
EXPECTED_CARGO=(
  "cargo fetch --locked"
  "cargo build --release --locked --workspace"
  "cargo build --release --locked --workspace"
)

# Resolving the dependency layer offline (below) needs every crate of Cargo.lock in
# cargo's cache, those only other platforms use too, as the image's own
# `cargo fetch --locked` gets them. A machine that has only ever built for Linux has
# not fetched those yet.
cargo fetch --locked --quiet || { echo "check-dockerfile: cargo fetch --locked failed (network or Cargo.lock?)" >&2; exit 1; }

python3 - "${EXPECTED_CARGO[@]}" <<'PY'
import json, pathlib, re, shlex, subprocess, sys

import yaml

expected = sys.argv[1:]
repo = pathlib.Path.cwd()
dockerfile = (repo / "infra/Dockerfile").read_text()
errors = []

# The instructions, through BuildKit's own parser (PyPI `dockerfile`, installed by
# infra/check.sh) so a syntax error fails here; else a plain reader of the file.
env_keys = []   # (instruction, variable) for every ENV and ARG
try:
    import dockerfile as buildkit
except ImportError:
    buildkit = None
if buildkit is not None:
    try:
        commands_ = buildkit.parse_string(dockerfile)
    except buildkit.GoParseError as err:
        print(f"error: infra/Dockerfile does not parse: {err}")
        sys.exit(1)
    parsed = []
    for c in commands_:
        word = c.cmd.upper()
        parsed.append((word, " ".join(list(c.flags) + list(c.value))))
        if word == "ENV":
            env_keys += [("ENV", key) for key in c.value[0::2]]
        elif word == "ARG":
            env_keys += [("ARG", v.split("=", 1)[0]) for v in c.value]
else:
    print("note: PyPI package `dockerfile` (BuildKit's parser) is missing; reading the file plainly")
    instructions, current = [], ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        instructions.append(current.strip())
        current = ""
    parsed = []
    for ins in instructions:
        word, _, rest = ins.partition(" ")
        parsed.append((word.upper(), " ".join(rest.split())))
        if word.upper() in ("ENV", "ARG"):
            env_keys += [(word.upper(), m) for m in re.findall(r"(?:^|\s)([A-Za-z_]\w*)=", rest)]
instructions = [f"{word} {rest}" for word, rest in parsed]
KNOWN = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
         "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER"}
for word, rest in parsed:
    if word not in KNOWN:
        errors.append(f"unknown instruction {word} {rest[:40]}")

stages = [rest for word, rest in parsed if word == "FROM"]
if len(stages) < 2:
    errors.append("the Dockerfile must be multi-stage (a build stage and a runtime stage)")

# 1. cargo commands, in order
cargo = []
for word, rest in parsed:
    if word != "RUN":
        continue
    for command in re.split(r"&&|;|\|\|", rest):
        command = " ".join(command.split())
        if command.startswith("cargo "):
            cargo.append(command)
if cargo != expected:
    errors.append("cargo commands differ from the expected list:\n    found:    " + "\n              ".join(cargo)
                  + "\n    expected: " + "\n              ".join(expected))
for word, key in env_keys:
    if re.fullmatch(r"RUSTFLAGS|CARGO_ENCODED_RUSTFLAGS|CARGO_PROFILE_\w+|CARGO_BUILD_\w+|CARGO_TARGET_\w+", key):
        errors.append(f"{word} {key}: changes what cargo builds")

rust_arg = re.search(r"ARG RUST_VERSION=(\d+)\.(\d+)", dockerfile)
root = (repo / "Cargo.toml").read_text()
msrv = re.search(r'rust-version\s*=\s*"(\d+)\.(\d+)', root)
if not rust_arg:
    errors.append("ARG RUST_VERSION=<major.minor> is missing")
elif msrv and tuple(map(int, rust_arg.groups())) < tuple(map(int, msrv.groups())):
    errors.append(f"RUST_VERSION {'.'.join(rust_arg.groups())} is older than the workspace's rust-version {'.'.join(msrv.groups())}")

# 2. dependency layer vs workspace members
meta = json.loads(subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
                                 check=True, capture_output=True, text=True).stdout)
members = {}
for package in meta["packages"]:
    folder = pathlib.Path(package["manifest_path"]).parent.relative_to(repo).as_posix()
    members[folder] = package
copied = set()
for word, rest in parsed:
    if word == "COPY":
        parts = rest.split()
        for src in parts[:-1]:
            if src.endswith("/Cargo.toml"):
                copied.add(src[: -len("/Cargo.toml")])
for folder in sorted(set(members) - copied):
    errors.append(f"the dependency layer does not COPY {folder}/Cargo.toml")
for folder in sorted(copied - set(members)):
    errors.append(f"the dependency layer copies {folder}/Cargo.toml, which is no workspace member")
if "COPY Cargo.toml Cargo.lock ./" not in instructions:
    errors.append("the dependency layer must COPY Cargo.toml Cargo.lock ./ (the lock file keeps --locked honest)")

dummy = (repo / "infra/docker/dummy-sources.sh").read_text()
lib_list, bin_list = set(), set()
for line in dummy.splitlines():
    m = re.match(r"for crate in ([\w\s-]+); do (.*)done", line.strip())
    if m:
        crates = m.group(1).split()
        if re.search(r"\blib\b", m.group(2)):
            lib_list.update(crates)
        if re.search(r"\bbin\b", m.group(2)):
            bin_list.update(crates)
for folder in members:
    has_lib = (repo / folder / "src/lib.rs").exists()
    has_main = (repo / folder / "src/main.rs").exists()
    if has_lib != (folder in lib_list):
        errors.append(f"dummy-sources.sh: {folder} {'has' if has_lib else 'has no'} src/lib.rs but the script {'does not create' if has_lib else 'creates'} one")
    if has_main != (folder in bin_list):
        errors.append(f"dummy-sources.sh: {folder} {'has' if has_main else 'has no'} src/main.rs but the script {'does not create' if has_main else 'creates'} one")
    for target in members[folder]["targets"]:
        if "bin" in target["kind"] and pathlib.Path(target["src_path"]).relative_to(repo / folder).as_posix() != "src/main.rs":
            errors.append(f"{folder}: bin {target['name']} is not src/main.rs; dummy-sources.sh does not know it")

# 2b. the dependency layer really resolves: copy exactly what its COPY lines copy
# into an empty folder, create the dummy sources, and let cargo resolve the whole
# dependency graph against the committed Cargo.lock (--locked: no change allowed).
import shutil, tempfile
with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    for word, rest in parsed:
        if word == "RUN" and "dummy-sources" in rest:
            break
        if word != "COPY" or rest.startswith("--from"):
            continue
        *srcs, dest = rest.split()
        if dest.startswith("/"):
            continue  # the helper script itself, outside the workspace
        for src in srcs:
            if (repo / src).is_dir():
                # COPY of a folder copies what is in it into dest.
                shutil.copytree(repo / src, tmp / dest, dirs_exist_ok=True)
                continue
            target = tmp / dest / pathlib.Path(src).name if dest.endswith("/") else tmp / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(repo / src, target)
    subprocess.run(["sh", str(repo / "infra/docker/dummy-sources.sh")], cwd=tmp, check=True)
    resolved = subprocess.run(["cargo", "metadata", "--locked", "--offline", "--format-version", "1"],
                              cwd=tmp, capture_output=True, text=True)
    if resolved.returncode != 0:
        errors.append("the dependency layer (manifests + dummy sources) does not resolve with --locked:\n    "
                      + resolved.stderr.strip().replace("\n", "\n    "))

# 3. binaries
workspace_bins = {t["name"] for p in meta["packages"] for t in p["targets"] if "bin" in t["kind"]}
image_bins = set(re.findall(r"target/release/([\w-]+)", dockerfile))
for name in sorted(workspace_bins - image_bins):
    errors.append(f"the image does not copy target/release/{name} ([[bin]] of the workspace)")
for name in sorted(image_bins - workspace_bins):
    errors.append(f"the image copies target/release/{name}, which `cargo build --release --workspace` does not build")

def commands(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "command":
                if isinstance(value, str):
                    value = value.split()
                if value:
                    yield str(value[0])
            else:
                yield from commands(value)
    elif isinstance(node, list):
        for item in node:
            yield from commands(item)

referenced = {}
sources = [repo / "infra/docker-compose.yml"] + sorted((repo / "infra/k8s").glob("**/*.yaml"))
for path in sources:
    for doc in yaml.safe_load_all(path.read_text()):
        for name in commands(doc or {}):
            if name.startswith(("meetease", "loadtest")):
                referenced.setdefault(name, []).append(path.relative_to(repo).as_posix())
scripts = {"meetease-healthcheck", "meetease-sfu-drain"}
for name, where in sorted(referenced.items()):
    if name in scripts:
        continue
    if name not in workspace_bins:
        errors.append(f"{', '.join(sorted(set(where)))} run(s) `{name}`, which is no [[bin]] of the workspace")
    elif name not in image_bins:
        errors.append(f"{', '.join(sorted(set(where)))} run(s) `{name}`, which the image does not contain")
for script, source in (("meetease-healthcheck", "infra/docker/healthcheck.sh"), ("meetease-sfu-drain", "infra/docker/sfu-drain.sh")):
    if f"COPY {source} /usr/local/bin/{script}" not in instructions:
        errors.append(f"the image must COPY {source} /usr/local/bin/{script}")
    if not (repo / source).exists():
        errors.append(f"{source} does not exist")

# 3b. native libraries: the runtime stage is debian-slim with only libc, libm and
# libgcc_s (plus ca-certificates and tini). Every *-sys crate in Cargo.lock must be
# built in statically, or not be for Linux; a new one may link a shared library the
# image lacks (OpenSSL is the usual suspect): install its runtime package in the
# runtime stage, then add it here with the reason.
STATIC_OR_FOREIGN_SYS = {
    "aws-lc-sys": "built and linked statically (the crypto for jsonwebtoken, str0m, aws-lc-rs)",
    "libsqlite3-sys": "SQLite bundled by sqlx's sqlite feature",
    "linux-raw-sys": "no library: raw syscalls",
    "core-foundation-sys": "macOS only", "system-configuration-sys": "macOS only",
    "security-framework-sys": "macOS only (rustls-platform-verifier)",
    "jni-sys": "Android only", "windows-sys": "Windows only",
    "js-sys": "wasm only", "web-sys": "wasm only",
}
lock = (repo / "Cargo.lock").read_text()
for crate in sorted(set(re.findall(r'^name = "([A-Za-z0-9_-]+-sys)"', lock, re.M))):
    if crate not in STATIC_OR_FOREIGN_SYS:
        errors.append(f"Cargo.lock has {crate}: it may link a shared library the runtime image lacks; "
                      "install its runtime package in the runtime stage and list it in STATIC_OR_FOREIGN_SYS (infra/check-dockerfile.sh)")

# 4. runtime stage
runtime_from = stages[-1] if stages else ""
if not re.match(r"debian:[\w.${}-]*slim", runtime_from.replace("${DEBIAN_RELEASE}", "bookworm")):
    errors.append(f"the runtime stage is FROM {runtime_from}; expected debian:<release>-slim")
last_stage = parsed[max(i for i, (w, _) in enumerate(parsed) if w == "FROM"):]
users = [rest for word, rest in last_stage if word == "USER"]
if not users or re.match(r"^(0|root)(:|$)", users[-1]) or not re.match(r"^\d+(:\d+)?$", users[-1]):
    errors.append(f"the runtime stage must end as a numeric non-root USER (found {users[-1] if users else 'none'})")
if not any(word == "HEALTHCHECK" for word, _ in last_stage):
    errors.append("the runtime stage has no HEALTHCHECK")
for word, key in env_keys:
    if re.search(r"PASSWORD|SECRET|TOKEN|_KEY$|CREDENTIAL", key, re.I):
        errors.append(f"{word} {key}: looks like a secret baked into the image")
for word, rest in parsed:
    if word in ("COPY", "ADD") and re.search(r"(^|\s)\S*\.env(\s|$)", rest):
        errors.append(f"{word} {rest}: copies an .env file into the image")
ignore = [l.strip() for l in (repo / "infra/.dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
for entry in (".env", ".git", "target"):
    if entry not in ignore:
        errors.append(f"infra/.dockerignore does not exclude {entry}")
link = repo / "infra/Dockerfile.dockerignore"
if not link.exists() or link.resolve() != (repo / "infra/.dockerignore").resolve():
    errors.append("infra/Dockerfile.dockerignore (what BuildKit reads for -f infra/Dockerfile) must link to .dockerignore")

for error in errors:
    print(f"error: {error}")
if errors:
    print(f"check-dockerfile: {len(errors)} problem(s) in infra/Dockerfile")
    sys.exit(1)
print(f"check-dockerfile: cargo steps {len(cargo)}/{len(expected)} as expected; {len(members)} members in the dependency layer; "
      f"the layer resolves --locked; {len(image_bins)} binaries = the workspace's [[bin]]s; "
      f"{len(set(referenced) - scripts)} binaries run by compose/k8s are among them")
PY
