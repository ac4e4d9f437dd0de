#!/bin/sh
# Empty sources for every workspace member, so `cargo build` compiles only the
# dependencies (the Docker dependency layer). A member gets a lib.rs, a main.rs or
# both, matching the files its real sources have (listed below; check-dockerfile.sh
# compares this list with the workspace).
set -eu
lib() { mkdir -p "$1/src" && : > "$1/src/lib.rs"; }
bin() { mkdir -p "$1/src" && echo 'fn main() {}' > "$1/src/main.rs"; }
for crate in proto servicekit; do lib "$crate"; done
for crate in sfu signaling auth users notify analytics gateway; do lib "$crate"; bin "$crate"; done
for crate in loadtest meetease; do bin "$crate"; done
