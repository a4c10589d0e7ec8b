#!/bin/busybox sh
# L1 init of the microvm KVM test rig (package rig, see doc.go).
#
# Runs as PID 1 in the L1 guest that QEMU TCG boots with emulated AMD-V. It
# mounts the pseudo file systems, loads the modules listed in
# /etc/microvm/modules (irqbypass, kvm, kvm-amd) to get a real SVM-backed
# /dev/kvm, runs the per-run driver /rig/run.sh (written by the
# host, appended as a second cpio archive) and powers off.
#
# Protocol: every line on /dev/ttyS1 (fd 3, nothing else writes there) that
# starts with "RIG:<nonce> " is an event; the nonce comes from /rig/env and
# makes command output unable to forge one:
#   HELLO <uptime>                  init is running
#   KVM ok|fail <uptime> [detail]   kvm modules loaded, /dev/kvm opened
#   BEGIN <name> <uptime>           a command starts
#   O <text>                        one line of the command's stdout+stderr
#   END <name> <status> <uptime>    the command ended with <status>
#   DONE <uptime>                   all commands ran; power-off follows
# Kernel messages go to the console on ttyS0 and never reach ttyS1.

/bin/busybox mkdir -p /proc /sys /dev /tmp /var/tmp /run /root /sbin /usr/bin /usr/sbin
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox ln -sf /proc/self/fd /dev/fd # QEMU's -chardev path=/dev/fd/N
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
# What a host's container tools take for granted: pseudo-terminals (microvm
# oci --console-socket), /dev/shm (podman's locks), the cgroup2 hierarchy.
/bin/busybox mkdir -p /dev/pts /dev/shm
/bin/busybox mount -t devpts -o ptmxmode=0666 devpts /dev/pts
/bin/busybox mount -t tmpfs -o mode=1777 tmpfs /dev/shm
/bin/busybox mkdir -p /sys/fs/cgroup && /bin/busybox mount -t cgroup2 cgroup2 /sys/fs/cgroup
/bin/busybox --install -s
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb

. /rig/env
P="RIG:$RIG_NONCE"
stty -F /dev/ttyS1 raw -echo 2>/dev/null
exec 3>/dev/ttyS1

up() { read -r u _ </proc/uptime; echo "$u"; }

echo "$P HELLO $(up)" >&3

kvm="ok"
detail=""
while read -r m; do
	if ! out=$(insmod "/lib/modules/$m" 2>&1); then
		kvm="fail"
		detail="$detail insmod $m: $(echo "$out" | tr '\n' ' ');"
	fi
done </etc/microvm/modules
if ! { : <>/dev/kvm; } 2>/dev/null; then
	kvm="fail"
	detail="$detail open /dev/kvm failed;"
fi
echo "$P KVM $kvm $(up)$detail" >&3

# rig_run NAME TIMEOUT FILE: run FILE with sh -e in a session of its own,
# frame its output, and kill that session (anything the command left behind)
# when it ends or when TIMEOUT (seconds, 0 = none) passes.
rig_run() {
	name=$1 limit=$2 file=$3
	echo "$P BEGIN $name $(up)" >&3
	{
		cd /rig/work
		setsid sh -e "$file" </dev/null 2>&1 &
		pid=$!
		dog=""
		if [ "$limit" -gt 0 ]; then
			setsid sh -c "sleep $limit; kill -s KILL -- -$pid" </dev/null >/dev/null 2>&1 &
			dog=$!
		fi
		wait "$pid"
		echo $? >/tmp/rig.status
		[ -z "$dog" ] || kill -s KILL -- "-$dog" 2>/dev/null
		kill -s KILL -- "-$pid" 2>/dev/null
	} | awk -v p="$P O " '{ print p $0; fflush() }' >&3
	echo "$P END $name $(cat /tmp/rig.status) $(up)" >&3
}

mkdir -p /rig/work
[ -f /rig/run.sh ] && . /rig/run.sh

echo "$P DONE $(up)" >&3
# The last close of the tty waits until its output has drained.
exec 3>&-
poweroff -f
