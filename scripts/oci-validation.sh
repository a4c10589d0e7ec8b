#!/usr/bin/env bash
# oci-validation.sh: the OCI runtime validation suite
# (github.com/opencontainers/runtime-tools, its validation/ programs, pinned
# in scripts/runtime-tools) against runc and against `microvm oci`, in one L1
# of the KVM rig (docs/rig.md), test by test, the two runtimes interleaved.
#
#   scripts/oci-validation.sh [TEST ...]     (default: every program)
#   MICROVM_OCI_ROOTFS=9p scripts/oci-validation.sh ...   (the rootfs shared, not an image)
#
# Needs: bin/microvm (make build), the lean kernel (make kernel), the rig's L1
# kernel (make debian-kernel), runc, mke2fs (e2fsprogs: microvm oci's rootfs
# images). Writes $CACHE/runtime-tools/results.txt
# (one line per test and runtime: passed and failed TAP points, exit status)
# and prints a markdown table; the raw TAP output of every run is in
# $CACHE/runtime-tools/log.txt. docs/oci.md records the last run.
#
# In L1 the root file system is the initramfs, which pivot_root cannot leave:
# runc runs there through a wrapper that adds --no-pivot to create and run,
# as microvm's own container paths do (container/oci.go).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
CACHE=${CACHE:-$root/.cache}
out=$CACHE/runtime-tools
mkdir -p "$out/bin"

echo "oci-validation: building runtime-tools' validation programs" >&2
(cd scripts/runtime-tools && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$out/bin/" \
	github.com/opencontainers/runtime-tools/cmd/runtimetest \
	github.com/opencontainers/runtime-tools/validation/...)
src=$(cd scripts/runtime-tools && go list -m -f '{{.Dir}}' github.com/opencontainers/runtime-tools)
# The programs run `tar -xf rootfs-amd64.tar.gz`; L1's busybox tar does not
# detect gzip by itself, so the file L1 gets is the tarball uncompressed.
gzip -dc "$src/rootfs-amd64.tar.gz" >"$out/rootfs-amd64.tar"

if [ $# -gt 0 ]; then
	tests=("$@")
else
	tests=()
	for f in "$out"/bin/*; do
		n=$(basename "$f")
		[ "$n" = runtimetest ] || tests+=("$n")
	done
fi
for f in bin/microvm "$CACHE/kernel/vmlinux"; do
	[ -e "$f" ] || { echo "oci-validation: $f missing (make build kernel)" >&2; exit 2; }
done
runc=$(command -v runc) || { echo "oci-validation: runc not found (apt-get install runc)" >&2; exit 2; }
mke2fs=$(command -v mke2fs) || { echo "oci-validation: mke2fs not found (apt-get install e2fsprogs)" >&2; exit 2; }

cat >"$out/runc-nopivot" <<'EOF'
#!/bin/sh
# runc with --no-pivot after create and run (L1's root is an initramfs).
n=$#
for a do
	if [ "$a" = create ] || [ "$a" = run ]; then set -- "$@" "$a" --no-pivot; else set -- "$@" "$a"; fi
done
shift $n
exec runc "$@"
EOF
chmod +x "$out/runc-nopivot"

# The L1 side: every test against each runtime, from a directory holding
# runtimetest and the rootfs tarball (the programs look for both in their
# working directory); a RESULT line per run, the TAP lines that failed, and
# the whole output in the log (between markers).
script=$out/run-in-l1.sh
{
	echo 'export MICROVM=/bin/microvm MICROVM_KERNEL_VMLINUX=/guest/vmlinux MICROVM_CACHE=/rig/cache'
	echo "export MICROVM_OCI_ROOTFS=${MICROVM_OCI_ROOTFS:-image}"
	echo 'mkdir -p /rig/cache; cd /vt'
	echo 'for t in '"${tests[*]}"'; do'
	echo '  for r in runc microvm; do'
	echo '    rt=/vt/runc-nopivot; [ $r = microvm ] && rt=/bin/microvm-oci'
	echo '    RUNTIME=$rt timeout 300 ./$t >/tmp/tap 2>&1; st=$?'
	echo '    echo "RESULT $t $r pass=$(grep -c "^ok" /tmp/tap) fail=$(grep -c "^not ok" /tmp/tap) status=$st"'
	echo '    echo "BEGIN-TAP $t $r"; cat /tmp/tap; echo "END-TAP $t $r"'
	echo '  done'
	echo 'done'
} >"$script"

args=(-bin "$runc" -bin "$mke2fs" -memory 4096 -timeout 80m -workdir "$out/rig"
	-file /bin/microvm="$root/bin/microvm" -file /bin/microvm-oci="$root/scripts/microvm-oci"
	-file /guest/vmlinux="$CACHE/kernel/vmlinux" -file /vt/runc-nopivot="$out/runc-nopivot"
	-file /vt/runtimetest="$out/bin/runtimetest" -file /vt/rootfs-amd64.tar.gz="$out/rootfs-amd64.tar"
	-file /vt/run.sh="$script")
for t in "${tests[@]}"; do
	args+=(-file "/vt/$t=$out/bin/$t")
done
echo "oci-validation: ${#tests[@]} tests x {runc, microvm} in the rig" >&2
go run ./internal/rig/rigrun -q "${args[@]}" 'sh /vt/run.sh' >&2 || true
sed -n 's/^RIG:[0-9a-f]* O //p' "$out/rig/results.log" >"$out/log.txt"
grep '^RESULT ' "$out/log.txt" | sed 's/^RESULT //' >"$out/results.txt" || true

awk '
	{ split($3, p, "="); split($4, f, "="); split($5, s, "=")
	  key[$1] = 1; pass[$1, $2] = p[2]; fail[$1, $2] = f[2]; st[$1, $2] = s[2]
	  if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
	END {
		print "| test | runc: ok / not ok (status) | microvm: ok / not ok (status) |"
		print "| --- | --- | --- |"
		for (i = 1; i <= n; i++) {
			t = order[i]
			printf "| %s | %s / %s (%s) | %s / %s (%s) |\n", t, pass[t, "runc"], fail[t, "runc"], st[t, "runc"], pass[t, "microvm"], fail[t, "microvm"], st[t, "microvm"]
			tp["runc"] += pass[t, "runc"]; tf["runc"] += fail[t, "runc"]
			tp["microvm"] += pass[t, "microvm"]; tf["microvm"] += fail[t, "microvm"]
			if (fail[t, "runc"] == 0 && st[t, "runc"] == 0) cr++
			if (fail[t, "microvm"] == 0 && st[t, "microvm"] == 0) cm++
		}
		printf "| **all %d programs** | %d / %d, %d programs clean | %d / %d, %d programs clean |\n", n, tp["runc"], tf["runc"], cr, tp["microvm"], tf["microvm"], cm
	}' "$out/results.txt" | tee "$out/results.md"
