#!/usr/bin/env bash
# kernel-debian.sh OUTDIR: fetch Debian's cloud kernel without installing it.
#
# Resolves the exact linux-image-6.1.0-*-cloud-amd64 package that the
# linux-image-cloud-amd64 metapackage depends on, `apt-get download`s it and
# unpacks it with `dpkg-deb -x`. Results:
#   OUTDIR/vmlinuz   the bzImage
#   OUTDIR/modules   its /lib/modules/<release> directory (virtio drivers,
#                    kvm.ko, kvm-amd.ko, ... are modules in this kernel)
#   OUTDIR/release   the kernel release string, e.g. 6.1.0-56-cloud-amd64
#   OUTDIR/package   the package name and version that was fetched
# Cached: nothing is fetched when OUTDIR/vmlinuz and OUTDIR/package exist.
set -euo pipefail

out=${1:?usage: kernel-debian.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
exec 9>"$out/.lock"
flock 9

if [ -s "$out/vmlinuz" ] && [ -s "$out/package" ] && [ -d "$out/modules" ]; then
	echo "kernel-debian: cached ($(cat "$out/package"))" >&2
	exit 0
fi

meta=linux-image-cloud-amd64
dep() { apt-cache depends "$meta" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1; }
pkg=$(dep)
if [ -z "$pkg" ]; then
	echo "kernel-debian: $meta unknown to apt-cache; running apt-get update" >&2
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -qq
	pkg=$(dep)
fi
[ -n "$pkg" ] || { echo "kernel-debian: cannot resolve the package behind $meta" >&2; exit 1; }

tmp=$(mktemp -d "$out/.fetch.XXXXXX")
chmod 755 "$tmp" # apt-get download drops to the _apt user
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q "$pkg" >/dev/null)
deb=$(ls "$tmp"/*.deb)
dpkg-deb -x "$deb" "$tmp/root"
ver=$(dpkg-deb -f "$deb" Version)
release=${pkg#linux-image-}
[ -s "$tmp/root/boot/vmlinuz-$release" ] || { echo "kernel-debian: $deb has no boot/vmlinuz-$release" >&2; exit 1; }

rm -rf "$out/modules"
mv "$tmp/root/lib/modules/$release" "$out/modules"
mv "$tmp/root/boot/vmlinuz-$release" "$out/vmlinuz.tmp"
mv -f "$out/vmlinuz.tmp" "$out/vmlinuz"
echo "$release" >"$out/release"
echo "$pkg $ver" >"$out/package.tmp"
mv -f "$out/package.tmp" "$out/package"
echo "kernel-debian: $pkg $ver -> $out/vmlinuz" >&2
