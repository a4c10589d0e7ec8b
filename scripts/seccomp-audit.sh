#!/usr/bin/env bash
# seccomp-audit.sh BIN: run `BIN boot` scenarios under strace -f with the
# seccomp filter on and list the system calls made after the filter went in
# (the seccomp(2) call): what the allowlist in sandbox/seccomp.go must hold.
# A scenario killed by the filter is reported (strace shows SIGSYS).
set -uo pipefail
bin=${1:-bin/microvm}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '\xeb\xfe' >"$tmp/spin.bin"
scenarios=(
	"boot"
	"boot --json --guest ready"
	"boot --guest smp --cpus 4"
	"boot --guest exit --cmdline 42"
	"boot --guest hostile --cmdline mode=triple"
	"boot --guest hostile --cmdline mode=ports --log-level debug --timeout 60s"
	"boot --guest hostile --cmdline mode=hltif"
	"boot --guest hostile --cmdline mode=range"
	"boot --guest hostile --cmdline mode=pagetables"
	"boot --guest hostile --cmdline mode=spin2 --cpus 2"
	"boot $tmp/spin.bin --format flat --timeout 1s --json"
	"boot --stdin --guest hello"
)
fail=0
i=0
for s in "${scenarios[@]}"; do
	i=$((i + 1))
	echo hello | strace -f -qq -o "$tmp/trace.$i" $bin $s >/dev/null 2>"$tmp/err.$i"
	rc=$?
	if grep -q 'killed by SIGSYS' "$tmp/trace.$i"; then
		echo "KILLED by the filter: microvm $s" >&2
		grep -m3 'SIGSYS\|si_syscall' "$tmp/trace.$i" >&2
		fail=1
	fi
	printf '%-70s status %d\n' "microvm $s" "$rc"
done
# A scenario that ends by a signal: SIGTERM to microvm while the guest spins.
strace -f -qq -o "$tmp/trace.term" $bin boot "$tmp/spin.bin" --format flat --timeout 10s >/dev/null 2>&1 &
tracer=$!
sleep 1
kill -TERM "$(pgrep -P $tracer)"
wait $tracer
printf '%-70s status %d\n' "microvm boot spin.bin, then SIGTERM" "$?"
# A terminal: raw mode, the stdin pump and the restore (script gives a pty).
if command -v script >/dev/null; then
	script -qec "strace -f -qq -o $tmp/trace.pty $bin boot --guest hello" /dev/null >/dev/null 2>&1
	printf '%-70s status %d\n' "microvm boot on a terminal" "$?"
fi
echo
echo "system calls after seccomp(2), all scenarios (calls, name):"
for f in "$tmp"/trace.*; do
	awk '/seccomp\(SECCOMP_SET_MODE_FILTER/ { on = 1; next } on' "$f"
done | sed -E 's/^[0-9]+ +//; s/^<\.\.\. ([a-z_0-9]+) resumed>.*/\1(/' |
	grep -oE '^[a-z_0-9]+\(' | tr -d '(' | grep -vx seccomp | sort | uniq -c | sort -rn
echo
echo "ioctl requests after seccomp(2):"
for f in "$tmp"/trace.*; do
	awk '/seccomp\(SECCOMP_SET_MODE_FILTER/ { on = 1; next } on' "$f"
done | grep -oE 'ioctl\([0-9]+, [A-Z_0-9]+' | awk '{print $2}' | sort | uniq -c | sort -rn
exit $fail
