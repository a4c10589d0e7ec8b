#!/bin/sh
# microvm guest /init (busybox ash), written by images/initramfs.
#
#   1. mount devtmpfs on /dev first: until then there may be no console
#   2. mount proc and sysfs; insmod the modules listed in /etc/microvm/modules
#   3. with root=/dev/... on the command line, while on the initramfs: mount
#      that device and switch_root to it (its /init starts again at 1.)
#   4. print "microvm-init: ready" and write the microvm ready register
#   5. run microvm.cmd="..." from the kernel command line (or a shell)
#   6. write its exit status to the microvm exit register, power off
#
# The microvm registers are reached through /dev/port when the kernel has it
# (PCI/ISA kernels), else through /dev/mem on the MMIO control page:
#   exit  (the byte written is the VM's exit status): port 0x501, MMIO 0xc0000000
#   ready (any write marks the workload running):      port 0x502, MMIO 0xc0000002
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t devtmpfs devtmpfs /dev
exec 0</dev/console 1>/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys

# mvm_write PORT MMIO VALUE: write the byte VALUE to a microvm register.
mvm_write() {
	if [ -c /dev/port ]; then
		printf "\\$(printf %o "$3")" | dd of=/dev/port bs=1 seek=$(($1)) count=1 2>/dev/null
	else
		devmem $(($2)) 8 "$3"
	fi
}

if [ -z "$MICROVM_SWITCHED" ] && [ -f /etc/microvm/modules ]; then # loaded already when switched
	while read -r m; do
		if [ -n "$m" ] && ! insmod "/lib/modules/$m"; then
			echo "microvm-init: insmod $m failed"
		fi
	done </etc/microvm/modules
fi

# root=DEV while on the initramfs (a kernel whose disk driver is a module
# loaded above): wait for DEV, mount it (ro unless rw is given;
# rootfstype= names the file system, else mount guesses) and switch to it.
# Its own /init then runs from the start with MICROVM_SWITCHED set.
read -r cmdline </proc/cmdline
root= rootfstype= rootmode=ro
for arg in $cmdline; do
	case $arg in
	root=/dev/*) root=${arg#root=} ;;
	rootfstype=*) rootfstype=${arg#rootfstype=} ;;
	rw | ro) rootmode=$arg ;;
	esac
done
if [ -n "$root" ] && [ -z "$MICROVM_SWITCHED" ] &&
	awk '$2 == "/" && $3 == "rootfs" { found = 1 } END { exit !found }' /proc/mounts; then
	i=0
	while [ ! -b "$root" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	mkdir -p /newroot
	if mount -o "$rootmode" ${rootfstype:+-t "$rootfstype"} "$root" /newroot; then
		echo "microvm-init: root $root mounted $rootmode; switching to it"
		umount -l /proc /sys /dev
		export MICROVM_SWITCHED=1
		exec switch_root /newroot /init
	fi
	echo "microvm-init: cannot mount root $root; staying on the initramfs"
fi

echo "microvm-init: ready"
mvm_write 0x502 0xc0000002 1

cmd=
case " $cmdline" in
*" microvm.cmd="*)
	rest=" $cmdline"
	rest=${rest#* microvm.cmd=}
	case $rest in
	\"*)
		rest=${rest#\"}
		cmd=${rest%%\"*}
		;;
	*) cmd=${rest%% *} ;;
	esac
	;;
esac

if [ -n "$cmd" ]; then
	sh -c "$cmd"
	status=$?
else
	echo "microvm-init: no microvm.cmd= on the kernel command line: starting a shell (exit it to power off)"
	setsid cttyhack sh
	status=$?
fi
echo "microvm-init: exit $status"
sync # the VM ends at the exit register: leave a disk root clean
mount -o remount,ro / 2>/dev/null
mvm_write 0x501 0xc0000000 "$status"
poweroff -f
