#!/usr/bin/env bash
# fuzz-all.sh DURATION: run every Go fuzz target in the module for DURATION each.
# A crasher fails the run; go test saves it under testdata/fuzz/ so it becomes
# a regression test.
set -euo pipefail
dur=${1:-10s}
fail=0
while IFS= read -r pkg; do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "fuzz: $pkg $f ($dur)"
		if ! go test -run='^$' -fuzz="^${f}\$" -fuzztime="$dur" "$pkg"; then
			fail=1
		fi
	done
done < <(go list ./...)
exit $fail
