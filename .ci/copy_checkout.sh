#!/usr/bin/env bash
# Copies this checkout's files into DEST: tracked files and untracked ones git does not ignore
# (what a commit of the working tree would hold), without .git or build outputs.
#   bash .ci/copy_checkout.sh DEST
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dest=$1
mkdir -p "$dest"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
   | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
   | tar --null -T - -cf -) | tar -xf - -C "$dest"
