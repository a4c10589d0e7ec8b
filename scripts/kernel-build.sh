#!/usr/bin/env bash
# kernel-build.sh OUTDIR FRAGMENT: build the microvm lean kernel.
#
# Takes Debian's linux-source-6.1 (/usr/src/linux-source-6.1.tar.xz), runs
# `make tinyconfig`, merges FRAGMENT (images/kernel/lean.config) with
# scripts/kconfig/merge_config.sh, resolves it with olddefconfig, verifies
# that every option the fragment asks for is really set that way, and builds
# vmlinux and bzImage with -j$(nproc). Results: OUTDIR/vmlinux,
# OUTDIR/bzImage, OUTDIR/config, OUTDIR/key.
#
# Cached: OUTDIR/key holds sha256(fragment) + the source package version;
# when it matches and both images exist, nothing is done.
set -euo pipefail

out=${1:?usage: kernel-build.sh OUTDIR FRAGMENT}
frag=${2:?usage: kernel-build.sh OUTDIR FRAGMENT}
tarball=/usr/src/linux-source-6.1.tar.xz
pkg=linux-source-6.1

[ -r "$tarball" ] || { echo "kernel-build: $tarball missing: install $pkg (make deps)" >&2; exit 1; }
srcver=$(dpkg-query -W -f='${Version}' "$pkg")
fraghash=$(sha256sum "$frag" | cut -d' ' -f1)
key="$pkg=$srcver fragment=$fraghash"

mkdir -p "$out"
out=$(cd "$out" && pwd)
frag=$(cd "$(dirname "$frag")" && pwd)/$(basename "$frag")
exec 9>"$out/.lock"
flock 9

if [ -f "$out/key" ] && [ "$(cat "$out/key")" = "$key" ] && [ -s "$out/vmlinux" ] && [ -s "$out/bzImage" ]; then
	echo "kernel-build: cached ($key)" >&2
	exit 0
fi

start=$(date +%s)
src="$out/src"
if [ ! -f "$src/.extracted" ] || [ "$(cat "$src/.extracted")" != "$srcver" ]; then
	echo "kernel-build: extracting $tarball" >&2
	rm -rf "$src"
	mkdir -p "$src"
	tar -xJf "$tarball" -C "$src" --strip-components=1
	echo "$srcver" >"$src/.extracted"
fi

obj="$out/build"
mkdir -p "$obj"
jobs=$(nproc)
mk() { make -s -C "$src" O="$obj" ARCH=x86_64 "$@"; }

echo "kernel-build: configuring (tinyconfig + $(basename "$frag"))" >&2
mk tinyconfig >/dev/null
"$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$frag" >/dev/null
mk olddefconfig >/dev/null

# Verify: every wanted option must have survived Kconfig's dependency checks.
bad=0
while IFS= read -r line; do
	case "$line" in
	CONFIG_*=*)
		if ! grep -qxF "$line" "$obj/.config"; then
			got=$(grep -E "^(# )?${line%%=*}[= ]" "$obj/.config" || echo "absent")
			echo "kernel-build: wanted $line, got: $got" >&2
			bad=1
		fi
		;;
	"# CONFIG_"*" is not set")
		opt=${line#\# }
		opt=${opt%% *}
		if grep -qE "^${opt}=[ym]" "$obj/.config"; then
			echo "kernel-build: wanted $opt unset, got: $(grep -E "^${opt}=" "$obj/.config")" >&2
			bad=1
		fi
		;;
	esac
done <"$frag"
if [ "$bad" -ne 0 ]; then
	echo "kernel-build: config fragment not honoured; add the missing dependencies to $frag" >&2
	exit 1
fi

echo "kernel-build: building vmlinux and bzImage with -j$jobs" >&2
mk -j"$jobs" vmlinux bzImage

cp "$obj/vmlinux" "$out/vmlinux.tmp"
cp "$obj/arch/x86/boot/bzImage" "$out/bzImage.tmp"
cp "$obj/.config" "$out/config.tmp"
mv -f "$out/vmlinux.tmp" "$out/vmlinux"
mv -f "$out/bzImage.tmp" "$out/bzImage"
mv -f "$out/config.tmp" "$out/config"
echo "$key" >"$out/key.tmp"
mv -f "$out/key.tmp" "$out/key"
end=$(date +%s)
echo "kernel-build: done in $((end - start)) s: $out/vmlinux $out/bzImage" >&2
