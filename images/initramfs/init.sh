#!/bin/sh
# microvm guest /init (busybox ash), written by images/initramfs.
#
#   1. mount devtmpfs on /dev first: until then there may be no console
#   2. mount proc and sysfs; insmod the modules listed in /etc/microvm/modules
#   3. print "microvm-init: ready" and write the microvm ready register
#   4. run microvm.cmd="..." from the kernel command line (or a shell)
#   5. write its exit status to the microvm exit register, power off
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

if [ -f /etc/microvm/modules ]; then
	while read -r m; do
		if [ -n "$m" ] && ! insmod "/lib/modules/$m"; then
			echo "microvm-init: insmod $m failed"
		fi
	done </etc/microvm/modules
fi

echo "microvm-init: ready"
mvm_write 0x502 0xc0000002 1

cmd=
read -r cmdline </proc/cmdline
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
mvm_write 0x501 0xc0000000 "$status"
poweroff -f
