#!/usr/bin/env bash
# Builds a Docker image NAME that holds Debian's python3 and numpy, with no registry: its root
# file system is assembled from the files of this host's Debian packages (python3-numpy and
# every package it depends on, installed by scripts/test-deps.sh) and loaded with
# `docker import`. Links are followed, so the alternatives numpy's BLAS and LAPACK go through
# (/etc/alternatives) land as the files they name. The container tests' numpy job runs in it.
#
#   scripts/python-image.sh NAME
set -euo pipefail
name=${1:?usage: scripts/python-image.sh NAME}
command -v docker >/dev/null || { echo "python-image: the docker command is needed" >&2; exit 1; }
dpkg -s python3-numpy >/dev/null 2>&1 ||
    { echo "python-image: Debian's python3-numpy is not installed (scripts/test-deps.sh installs it)" >&2; exit 1; }

# The installed packages python3-numpy needs, all the way down: of alternatives (`a | b`), the
# installed one; version constraints and architecture qualifiers dropped.
declare -A seen=()
queue=(python3-numpy)
while [ ${#queue[@]} -gt 0 ]; do
    pkg=${queue[0]}
    queue=("${queue[@]:1}")
    [ -n "${seen[$pkg]:-}" ] && continue
    seen[$pkg]=1
    deps=$(dpkg-query -W -f='${Pre-Depends}, ${Depends}' "$pkg" 2>/dev/null || true)
    IFS=',' read -ra groups <<<"$deps"
    for group in "${groups[@]}"; do
        IFS='|' read -ra alternatives <<<"$group"
        for alt in "${alternatives[@]}"; do
            dep=$(echo "$alt" | sed -e 's/([^)]*)//g' -e 's/:any//' -e 's/[[:space:]]//g')
            [ -z "$dep" ] && continue
            if dpkg -s "$dep" >/dev/null 2>&1; then
                queue+=("$dep")
                break
            fi
        done
    done
done

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# Every file (not directory) of those packages, documentation left out.
# And the libraries that are alternatives (libblas.so.3, liblapack.so.3): update-alternatives
# makes their links, which no package lists.
{
    for pkg in "${!seen[@]}"; do dpkg -L "$pkg"; done
    find /usr/lib -maxdepth 2 -name 'lib*' -lname '/etc/alternatives/*'
} | sort -u |
    grep -v -E '^/usr/share/(doc|man|info|lintian|locale)/' |
    while read -r path; do if [ -e "$path" ] && [ ! -d "$path" ]; then echo "$path"; fi; done |
    tar -C / -chf - --no-recursion -T - 2>/dev/null | tar -C "$root" -xf -
mkdir -p "$root/tmp" "$root/gridwork"
chmod 1777 "$root/tmp"
echo "root:x:0:0::/:/bin/sh" >"$root/etc/passwd"
echo "nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin" >>"$root/etc/passwd"
tar -C "$root" -cf - . | docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' - "$name" >/dev/null
echo "$name: ${#seen[@]} packages, $(du -sm "$root" | cut -f1) MB"
