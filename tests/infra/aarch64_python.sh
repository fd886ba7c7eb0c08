#!/usr/bin/env bash
# An aarch64 CPython for tests/infra to import the arm64 layer with on an x86_64 machine (`make install`):
# - qemu's user-mode emulator, Debian's qemu-user-static: `qemu-aarch64-static -L SYSROOT PROGRAM` runs one
#   aarch64 program, its libraries looked up in SYSROOT first (no binfmt registration, no container);
# - Debian trixie's arm64 python3.13 unpacked into SYSROOT=DEST/python3.13, fetched with apt under a
#   configuration of its own in DEST/apt (the machine's apt sources and dpkg database are not touched).
# Why 3.13 and not the default runtime's 3.12: Debian has no CPython 3.12 for any architecture (bookworm
# ships 3.11, trixie 3.13), and the npm and PyPI packages of portable CPython builds only download them
# from elsewhere at install time. 3.11 cannot take the arm64 layer: psycopg-binary's aarch64 wheels need
# glibc 2.27+, and Lambda's python3.11 runs on Amazon Linux 2 (glibc 2.26), so sam build refuses them.
# A sysroot of another version is used the same way when it is put at DEST/pythonX.Y (usr/bin/pythonX.Y).
set -euo pipefail

dest=${1:?usage: aarch64_python.sh DEST}
version=3.13
sudo=${SUDO:-}

case "$(uname -m)" in
aarch64 | arm64)
	echo "aarch64 machine: the tests run the arm64 layer on the runtime's own interpreter"
	exit 0
	;;
esac

if ! command -v qemu-aarch64-static >/dev/null; then
	$sudo apt-get update -qq
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static
fi

mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
apt_dir=$dest/apt
sysroot=$dest/python$version
mkdir -p "$apt_dir"/{lists/partial,archives/partial,cache,etc/apt.conf.d,etc/preferences.d,etc/sources.list.d}
touch "$apt_dir/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
{
	for suite in trixie trixie-updates; do
		echo "deb [arch=arm64 signed-by=$keyring] http://deb.debian.org/debian $suite main"
	done
	echo "deb [arch=arm64 signed-by=$keyring] http://deb.debian.org/debian-security trixie-security main"
} >"$apt_dir/etc/sources.list"
cat >"$apt_dir/apt.conf" <<EOF
Dir::Etc "$apt_dir/etc/";
Dir::State::Lists "$apt_dir/lists/";
Dir::State::status "$apt_dir/status";
Dir::Cache "$apt_dir/cache/";
Dir::Cache::archives "$apt_dir/archives/";
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
APT::Install-Recommends "false";
EOF
export APT_CONFIG=$apt_dir/apt.conf
apt-get update -qq
# The interpreter and its standard library, with their dependencies down to libc (an empty dpkg
# database: apt fetches the whole closure, about 14 MB).
rm -f "$apt_dir"/archives/*.deb
apt-get install -y -qq --download-only "python$version-minimal" "libpython$version-stdlib" >/dev/null

rm -rf "$sysroot"
mkdir -p "$sysroot/usr/lib" "$sysroot/usr/bin"
ln -s usr/lib "$sysroot/lib" # trixie is merged-/usr: the loader is looked up as /lib/ld-linux-aarch64.so.1
ln -s usr/bin "$sysroot/bin"
for deb in "$apt_dir"/archives/*.deb; do
	dpkg-deb -x "$deb" "$sysroot"
done

machine=$(qemu-aarch64-static -L "$sysroot" "$sysroot/usr/bin/python$version" -S -I -c \
	'import platform, ssl, sqlite3, zlib, ctypes; print(platform.machine())')
[ "$machine" = aarch64 ] || {
	echo "the emulated python$version answered '$machine', not aarch64" >&2
	exit 1
}
rm -rf "$apt_dir" # the package lists alone are 200 MB
echo "aarch64 python$version ready in $sysroot (run with qemu-aarch64-static -L)"
