#!/usr/bin/env bash
# guests-debian.sh OUTDIR: fetch third-party guests from Debian's archive
# without installing them (docs/guests.md):
#   OUTDIR/memtest86+x64.bin  memtest86+'s bzImage-style 64-bit image (package memtest86+)
#   OUTDIR/invaders.exec      grub-invaders' Multiboot kernel (package grub-invaders)
#   OUTDIR/packages           the package names and versions fetched
# `apt-get download` + `dpkg-deb -x`. Cached: nothing is fetched when every
# file and OUTDIR/packages exist.
set -euo pipefail

out=${1:?usage: guests-debian.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
exec 9>"$out/.lock"
flock 9

# package file-in-package file-in-OUTDIR
wanted=(
	"memtest86+ boot/memtest86+x64.bin memtest86+x64.bin"
	"grub-invaders boot/invaders.exec invaders.exec"
)
cached=1
for w in "${wanted[@]}"; do
	read -r _ _ file <<<"$w"
	[ -s "$out/$file" ] || cached=0
done
if [ "$cached" = 1 ] && [ -s "$out/packages" ]; then
	echo "guests-debian: cached ($(tr '\n' ' ' <"$out/packages"))" >&2
	exit 0
fi

tmp=$(mktemp -d "$out/.fetch.XXXXXX")
chmod 755 "$tmp" # apt-get download drops to the _apt user
trap 'rm -rf "$tmp"' EXIT
: >"$tmp/packages"
for w in "${wanted[@]}"; do
	read -r pkg path file <<<"$w"
	if ! apt-cache show "$pkg" >/dev/null 2>&1; then
		echo "guests-debian: $pkg unknown to apt-cache; running apt-get update" >&2
		sudo=""
		[ "$(id -u)" -eq 0 ] || sudo="sudo"
		$sudo apt-get update -qq
	fi
	rm -rf "$tmp/root" "$tmp"/*.deb
	(cd "$tmp" && apt-get download -q "$pkg" >/dev/null)
	deb=$(ls "$tmp"/*.deb)
	dpkg-deb -x "$deb" "$tmp/root"
	[ -s "$tmp/root/$path" ] || { echo "guests-debian: $deb has no $path" >&2; exit 1; }
	mv -f "$tmp/root/$path" "$out/$file"
	echo "$pkg $(dpkg-deb -f "$deb" Version)" >>"$tmp/packages"
	echo "guests-debian: $pkg -> $out/$file" >&2
done
mv -f "$tmp/packages" "$out/packages"
