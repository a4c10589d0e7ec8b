package rig

import "regexp"

// MarkerScript returns a shell script for a Command that launches the
// shell command launch in the background, copies its output, and exits 0
// as soon as a line contains marker — printing "RIG-MARKER <seconds from
// launch to marker>" (L1's /proc/uptime, 10 ms resolution) — or 1 when
// launch's output ends without it. launch is killed either way. The same
// script times QEMU and microvm, so the two figures compare.
func MarkerScript(launch, marker string) string {
	return `mkfifo /tmp/m.fifo
t0=$(cut -d' ' -f1 /proc/uptime)
` + launch + ` </dev/null >/tmp/m.fifo 2>&1 &
lpid=$!
st=0
awk -v t0="$t0" '{ print } index($0, "` + marker + `") {
	getline u < "/proc/uptime"; split(u, a, " ")
	printf "RIG-MARKER %.2f\n", a[1] - t0; found = 1; exit
} END { exit !found }' </tmp/m.fifo || st=$?
kill -9 $lpid 2>/dev/null || true
wait $lpid || true
rm -f /tmp/m.fifo
exit $st
`
}

// MarkerRE matches MarkerScript's report; group 1 is the seconds.
var MarkerRE = regexp.MustCompile(`RIG-MARKER ([0-9.]+)`)
