#!/usr/bin/env bash
# libvirt-sandbox.sh start DIR [TCP_PORT] | stop DIR
#
# Start (or stop) a private libvirtd for trying `microvm libvirt` without
# touching the host's daemon: the real libvirtd, as root, in a mount namespace
# where /run, /var and /etc/libvirt are directories under DIR (the same set-up
# as the Go tests' libvirt/libvirttest). Prints the URIs to use. With
# TCP_PORT it also listens on 127.0.0.1:TCP_PORT with auth none.
#
#   scripts/libvirt-sandbox.sh start /tmp/lv
#   bin/microvm libvirt -c 'test:///default?socket=/tmp/lv/sock/libvirt-sock' list --all
#   scripts/libvirt-sandbox.sh stop /tmp/lv
set -euo pipefail
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,12p' "$0" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "libvirt-sandbox: needs root (mount namespace)" >&2; exit 1; }
case "$cmd" in
start)
	command -v libvirtd >/dev/null || PATH=$PATH:/usr/sbin
	command -v libvirtd >/dev/null || { echo "libvirt-sandbox: no libvirtd (apt-get install libvirt-daemon libvirt-daemon-driver-qemu)" >&2; exit 1; }
	case "$dir" in /var/*|/run/*) echo "libvirt-sandbox: DIR must not be under /var or /run" >&2; exit 1;; esac
	mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
	[ ! -e "$dir/libvirtd.pid.outer" ] || { echo "libvirt-sandbox: $dir is in use (stop it first)" >&2; exit 1; }
	mkdir -p "$dir"/{sock,run/lock,etc,var/lib/libvirt,var/cache/libvirt/qemu/capabilities,var/log/libvirt,var/tmp}
	ln -sfn /run "$dir/var/run"; ln -sfn /run/lock "$dir/var/lock"
	tcp=""
	if [ -n "${3:-}" ]; then
		tcp=$(printf 'listen_tcp = 1\ntcp_port = "%s"\nlisten_addr = "127.0.0.1"\nauth_tcp = "none"' "$3")
	fi
	cat >"$dir/etc/libvirtd.conf" <<CONF
unix_sock_dir = "$dir/sock"
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
listen_tls = 0
${tcp:-listen_tcp = 0}
log_outputs = "3:stderr"
CONF
	cat >"$dir/etc/qemu.conf" <<'CONF'
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
namespaces = [ ]
CONF
	cp /etc/passwd "$dir/passwd"; cp /etc/group "$dir/group"
	grep -q '^libvirt-qemu:' "$dir/passwd" || echo 'libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin' >>"$dir/passwd"
	grep -q '^libvirt-qemu:' "$dir/group" || echo 'libvirt-qemu:x:64055:' >>"$dir/group"
	listen=""; [ -n "$tcp" ] && listen="--listen"
	setsid unshare --mount --propagation private sh -c "
		mount --bind '$dir/run' /run && mount --bind '$dir/var' /var &&
		mount --bind '$dir/etc' /etc/libvirt && mount --bind '$dir/passwd' /etc/passwd &&
		mount --bind '$dir/group' /etc/group &&
		exec $(command -v libvirtd) -f /etc/libvirt/libvirtd.conf -p /run/libvirtd.pid $listen" \
		>"$dir/libvirtd.log" 2>&1 </dev/null &
	echo $! >"$dir/libvirtd.pid.outer"
	for _ in $(seq 100); do [ -S "$dir/sock/libvirt-sock" ] && break; sleep 0.05; done
	[ -S "$dir/sock/libvirt-sock" ] || { echo "libvirt-sandbox: libvirtd did not start:" >&2; tail "$dir/libvirtd.log" >&2; exit 1; }
	echo "qemu:///system?socket=$dir/sock/libvirt-sock"
	echo "test:///default?socket=$dir/sock/libvirt-sock"
	[ -z "${3:-}" ] || echo "qemu+tcp://127.0.0.1:$3/system"
	;;
stop)
	pid=$(cat "$dir/libvirtd.pid.outer" 2>/dev/null || true)
	[ -n "$pid" ] || { echo "libvirt-sandbox: nothing running in $dir" >&2; exit 1; }
	if command -v virsh >/dev/null; then
		for d in $(virsh -c "qemu:///system?socket=$dir/sock/libvirt-sock" list --name 2>/dev/null); do
			virsh -c "qemu:///system?socket=$dir/sock/libvirt-sock" destroy "$d" >/dev/null 2>&1 || true
		done
	fi
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$pid" 2>/dev/null || true
	for pf in "$dir"/run/libvirt/qemu/*.pid; do
		[ -e "$pf" ] || continue
		q=$(cat "$pf"); grep -qa qemu "/proc/$q/cmdline" 2>/dev/null && kill -9 "$q" || true
	done
	rm -f "$dir/libvirtd.pid.outer"
	;;
*) echo "libvirt-sandbox: unknown command $cmd (start|stop)" >&2; exit 2;;
esac
