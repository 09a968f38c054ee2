#!/usr/bin/env bash
# Builds fogshell's default shell image as an OCI image layout, reproducibly, with no daemon:
#
#   images/build.sh [OUT_DIR]        (default: images/out/default)
#
# The image is one layer: Debian's busybox-static with its applets as symlinks, /etc/passwd
# with root and an unprivileged `user` (uid 1000), and a profile that sets a prompt. Every
# file has a fixed owner and timestamp, the tar is sorted and gzip leaves out names and times,
# so the same busybox-static package version gives the same digest on every machine (the digest is
# printed at the end, and written to OUT_DIR/digest).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/out/default}
epoch=${SOURCE_DATE_EPOCH:-0}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The busybox binary, from Debian's busybox-static package (scripts/install-deps.sh installs it).
if ! version=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null) || [[ ! -x /bin/busybox ]]; then
  echo "images/build.sh needs Debian's busybox-static: apt-get install busybox-static" >&2
  exit 1
fi

root=$work/rootfs
mkdir -p "$root"/{bin,etc,home/user,root,tmp,proc,sys,dev,run}
cp /bin/busybox "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
done
mkdir -p "$root/usr"
ln -s ../bin "$root/usr/bin"
ln -s bin "$root/sbin"
cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:fogshell user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
user:x:1000:
nogroup:x:65534:
GROUP
cat >"$root/etc/profile" <<'PROFILE'
export PS1='\u@fogshell:\w\$ '
export PATH=/bin
PROFILE
echo fogshell >"$root/etc/hostname"
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"

python3 "$here/oci_layout.py" "$root" "$out" "$epoch" "busybox-static $version" home/user=1000:1000
# What the image holds, for its SBOM and provenance (images/publish.sh): one line per Debian
# package, `name version arch sha256-of-its-file-in-the-image`.
echo "busybox-static $version $(dpkg --print-architecture) $(sha256sum /bin/busybox | cut -d' ' -f1)" >"$out/packages"
echo "default image: $(cat "$out/digest") ($out)"
