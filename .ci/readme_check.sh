#!/usr/bin/env bash
# Runs README.md's command blocks as typed, in order, in one shell, the way a new user would:
# in a copy of this checkout (tracked files plus untracked ones git does not ignore), with no
# virtual environment active (README's Install block creates a fresh one). The blocks are the
# fenced ones right after a `<!-- readme-check: NAME -->` line, so README and check cannot drift:
#   NAME = install | quickstart | training | tests   bash, run in one shell in README order
#   NAME = python                                    python, each run by the environment's python
# Then checks: every command succeeded; `git status --porcelain` in the copy is empty; no
# process compiled the CPU kernel (the install built it, and python inside the checkout reuses
# it); the installed kernel loads from outside the checkout without any JIT build.
#
#   bash .ci/readme_check.sh                      # everything (CI)
#   README_CHECK_BLOCKS="install quickstart" bash .ci/readme_check.sh   # a subset, in README order
#   README_CHECK_KEEP=1 ...                       # keep the copy (path printed) for inspection
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
blocks=${README_CHECK_BLOCKS:-install quickstart python training tests}
work=$(mktemp -d "${TMPDIR:-/tmp}/readme_check.XXXXXX")
if [ "${README_CHECK_KEEP:-0}" != 1 ]; then trap 'rm -rf "$work"' EXIT; fi
copy="$work/checkout"
start=$(date +%s)

# 1. the copy, committed in a throw-away repository so that `git status` can judge it
bash "$repo/.ci/copy_checkout.sh" "$copy"
git -C "$copy" init -q
git -C "$copy" add -A
git -C "$copy" -c user.name=readme-check -c user.email=readme-check@localhost commit -qm snapshot

# 2. the script: the selected blocks, verbatim, in README order
python3 - "$repo/README.md" "$work/readme.sh" $blocks <<'PY'
import re, shlex, sys
readme, out, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
text = open(readme).read()
found = re.findall(r"<!-- readme-check: (\w+) -->\n```(\w+)\n(.*?)\n```", text, re.S)
names = {name for name, _, _ in found}
missing = sorted(set(wanted) - names)
if missing:
    sys.exit(f"README.md has no block marked <!-- readme-check: {missing[0]} --> (found: {sorted(names)})")
lines = ["set -eo pipefail  # stop at the first failing command, as a user would",
         "PS4='+ README> '", "set -x"]
for i, (name, lang, body) in enumerate(found):
    if name not in wanted:
        continue
    if name == "python" and lang == "python":
        lines += [": README python block", "python - <<'README_PY_EOF'", body, "README_PY_EOF"]
    elif lang == "bash":
        lines += [f": README block {name}", body]
    else:
        sys.exit(f"README block {name!r} is fenced as {lang!r}: expected bash (python for 'python')")
open(out, "w").write("\n".join(lines) + "\n")
PY
echo "== README blocks ($blocks), run in $copy"
sed 's/^/   | /' "$work/readme.sh"

# 3. run them in a clean shell: no active environment, no PYTHONPATH, no kernel switches
log="$work/readme.log"
(cd "$copy" && env -u VIRTUAL_ENV -u PYTHONPATH -u TSSD_FAST_NO_JIT -u TSSD_FAST_BACKEND \
   bash --noprofile --norc "$work/readme.sh") 2>&1 | tee "$log"
echo "== README blocks passed ($(( $(date +%s) - start )) s)"

# 4. what the run must not have done
status=$(git -C "$copy" status --porcelain --untracked-files=all)
if [ -n "$status" ]; then
  echo "README check: the commands modified the checkout (git status --porcelain):"; echo "$status"; exit 1
fi
if grep -q "tssd_fast: compiling the CPU kernel" "$log"; then
  echo "README check: a process JIT-compiled the CPU kernel although the install built it"; exit 1
fi
if [ -x "$copy/.venv/bin/python" ]; then
  if [ -n "${README_CHECK_TORCH:-}" ]; then  # e.g. CI: no later install may have replaced torch
    "$copy/.venv/bin/python" -c "import sys, torch; v = torch.__version__; print('torch', v); sys.exit(0 if v.startswith('$README_CHECK_TORCH') else 1)"
  fi
  (cd / && TSSD_FAST_NO_JIT=1 "$copy/.venv/bin/python" -c "import tssd_fast, sys; b = tssd_fast.available_backends('cpu'); print('installed:', tssd_fast.__file__, 'backends:', b); sys.exit(0 if 'cpp' in b else 1)")
fi
echo "== README check passed: checkout clean, kernel prebuilt ($(( $(date +%s) - start )) s)"
