#!/usr/bin/env bash
# Prints the path of a tarball holding a fresh Debian 12 root, making it first when it is
# not cached: `debootstrap --variant=minbase bookworm` (Debian's debootstrap package,
# ./scripts/setup --test installs it), then this machine's apt sources (/etc/apt/
# sources.list and sources.list.d/*.list|*.sources, with the keyrings they name) and the
# certificates it trusts (/etc/ssl/certs/ca-certificates.crt, /usr/local/share/
# ca-certificates/). Nothing else: no package lists, no package beyond minbase. Root only.
#
#   tests/fresh/rootfs.sh          the tarball's path (a .tar.gz of the root's /)
#
# The tarball is cached in COUNTERD_FRESH_CACHE, by default /var/cache/counterd/fresh (kept
# between runs and between clones of the repository; build/fresh-cache when /var/cache is
# not writable), named by a hash of what went into it (suite, variant, architecture, mirror,
# sources, keyrings, certificates): a change to any of them makes a new one. A lock on the
# cache folder lets runs share it. The mirror debootstrap uses is the first URI of the
# sources that serves bookworm (FRESH_MIRROR overrides it). The root is made in build/fresh/.
#
# Also a base image: `podman import "$(tests/fresh/rootfs.sh)" counterd-fresh:bookworm`.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
suite=bookworm
variant=minbase
format=1 # bump when what this script puts in the root changes

[[ "$(id -u)" == 0 ]] || { echo "rootfs.sh: debootstrap needs root" >&2; exit 1; }
command -v debootstrap > /dev/null ||
  { echo "rootfs.sh: debootstrap is missing (./scripts/setup --test installs it)" >&2; exit 1; }

cache="${COUNTERD_FRESH_CACHE:-}"
if [[ -z "$cache" ]]; then
  cache=/var/cache/counterd/fresh
  mkdir -p "$cache" 2> /dev/null && [[ -w "$cache" ]] || cache="$repo/build/fresh-cache"
fi
mkdir -p "$cache"

# The apt sources apt reads (it ignores other file names in sources.list.d).
sources=()
[[ -f /etc/apt/sources.list ]] && sources+=(/etc/apt/sources.list)
for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [[ -f "$f" ]] && sources+=("$f")
done
((${#sources[@]})) || { echo "rootfs.sh: this machine has no apt sources" >&2; exit 1; }

# Prints "<uri> <suites...>" for every enabled deb source (one-line and deb822 forms).
deb_sources() {
  awk '
    FNR == 1 { flush(); deb822 = (FILENAME ~ /\.sources$/) }
    function flush() {
      if (types ~ /(^| )deb( |$)/ && enabled != "no")
        for (i = 1; i <= nu; i++) print uris[i], suites
      types = ""; suites = ""; nu = 0; enabled = ""
    }
    deb822 && /^[ \t]*$/ { flush(); next }
    deb822 && /^Types:/ { types = $0; sub(/^Types:[ \t]*/, "", types) }
    deb822 && /^URIs:/ { for (i = 2; i <= NF; i++) uris[++nu] = $i }
    deb822 && /^Suites:/ { suites = $0; sub(/^Suites:[ \t]*/, "", suites) }
    deb822 && /^Enabled:/ { enabled = tolower($2) }
    !deb822 && $1 == "deb" {
      line = $0; sub(/\[[^]]*\]/, "", line); split(line, w)
      print w[2], w[3]
    }
    END { flush() }' "${sources[@]}"
}
# The keyrings the sources name (Signed-By / signed-by=), when they are files.
keyrings() {
  grep -ohE '([Ss]igned-[Bb]y:|signed-by=)[ \t]*[^] \t]+' "${sources[@]}" |
    sed -E 's/^[^:=]*[:=][ \t]*//' | while read -r k; do [[ -f "$k" ]] && echo "$k"; done | sort -u
}

mirror="${FRESH_MIRROR:-$(deb_sources |
  awk -v s="$suite" '{ for (i = 2; i <= NF; i++) if ($i == s) { print $1; exit } }')}"
[[ -n "$mirror" ]] || mirror=http://deb.debian.org/debian
certs=(/etc/ssl/certs/ca-certificates.crt)
for f in /usr/local/share/ca-certificates/*; do [[ -f "$f" ]] && certs+=("$f"); done

key=$( {
  echo "$format $suite $variant $(dpkg --print-architecture) $mirror"
  for f in "${sources[@]}" $(keyrings) "${certs[@]}"; do
    [[ -f "$f" ]] && { echo "$f"; sha256sum < "$f"; }
  done
} | sha256sum | cut -c1-16)
tarball="$cache/debian-$suite-$variant-$key.tar.gz"

exec 9> "$cache/.lock"
flock 9
if [[ ! -s "$tarball" ]]; then
  mkdir -p "$repo/build/fresh"
  dir=$(mktemp -d "$repo/build/fresh/debootstrap.XXXXXX")
  trap 'rm -rf --one-file-system "$dir"' EXIT
  echo "rootfs.sh: debootstrap --variant=$variant $suite from $mirror" \
       "(once; cached as $tarball)" >&2
  if ! debootstrap --variant="$variant" "$suite" "$dir" "$mirror" > "$dir.log" 2>&1; then
    tail -20 "$dir.log" >&2
    echo "rootfs.sh: debootstrap failed (whole log: $dir.log)" >&2
    exit 1
  fi
  rm -f "$dir.log"
  # This machine's sources replace debootstrap's one-line list.
  rm -f "$dir/etc/apt/sources.list"
  for f in "${sources[@]}"; do cp "$f" "$dir$f"; done
  for k in $(keyrings); do
    [[ -e "$dir$k" ]] || { mkdir -p "$dir$(dirname "$k")"; cp "$k" "$dir$k"; }
  done
  # What this machine trusts (a TLS-inspecting proxy's certificate, for one): the bundle
  # programs read, and the local certificates update-ca-certificates adds to it again
  # when the ca-certificates package is installed in the root.
  mkdir -p "$dir/etc/ssl/certs" "$dir/usr/local/share/ca-certificates"
  for f in "${certs[@]}"; do cp "$f" "$dir$f"; done
  rm -f "$dir/var/cache/apt/archives/"*.deb "$dir/var/lib/apt/lists/"*_Packages
  tar -C "$dir" --numeric-owner -czf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  echo "rootfs.sh: $(du -h "$tarball" | cut -f1) in $SECONDS s" >&2
fi
echo "$tarball"
