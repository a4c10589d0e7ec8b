#!/usr/bin/env bash
# bench-sandbox.sh BIN [RUNS]: the start-up cost that seccomp and the jail
# add to `microvm boot` of the ready guest, measured in one hyperfine run
# (-N: no shell in between), so the ratios compare like with like.
set -euo pipefail
bin=${1:-bin/microvm}
runs=${2:-200}
jail=$(mktemp -d)
trap 'rmdir "$jail" 2>/dev/null || true' EXIT
out=${BENCH_OUT:-${CACHE:-.cache}/bench-sandbox}
mkdir -p "$out"
hyperfine -N --warmup 20 --runs "$runs" --export-markdown "$out/startup.md" --export-json "$out/startup.json" \
	-n 'no seccomp, no jail' "$bin boot --guest ready -q --seccomp=off" \
	-n 'seccomp (default)' "$bin boot --guest ready -q" \
	-n 'jail, no seccomp' "$bin boot --guest ready -q --seccomp=off --jail $jail" \
	-n 'jail + seccomp' "$bin boot --guest ready -q --jail $jail"
echo "results: $out/startup.md"
# Medians (robust on a shared machine) and their ratio to the plain run.
python3 - "$out/startup.json" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))["results"]
base = r[0]["median"]
for x in r:
    print(f'{x["command"]:22s} median {x["median"]*1e3:6.2f} ms  min {x["min"]*1e3:6.2f} ms  ×{x["median"]/base:.2f}')
PY
