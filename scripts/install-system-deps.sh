#!/usr/bin/env bash
# Installs the Debian packages ccpipe needs, idempotently:
#   docker-registry skopeo umoci bubblewrap git busybox-static   (from the machine's own suites)
#   user-mode-linux                               (a kernel run as a process: the sandbox test on cgroup v2)
#   iproute2                                      (its 'ip netns' gives the multi-host tests their machines)
#   nodejs npm                                    (the official AsyncAPI parser checks ccpipe asyncapi in the suite)
#   nats-server >= 2.10                           (Debian's own build from a newer suite; bookworm's 2.9 is too old)
#   cosign >= 3                                   (Debian's own build from sid; the interop tests run it)
# The newer nats-server and cosign are fetched through a private apt configuration that points at
# the same archive the machine already uses, so apt verifies the signed Release file and the
# package hash; the system's sources are never edited. The binaries are unpacked under
# /opt/ccpipe/nats-server and /opt/ccpipe/cosign and linked into /usr/local/bin.
set -euo pipefail

NATS_MIN="2.10.0"
COSIGN_MIN="3.0.0"
COSIGN_SUITE="${CCPIPE_COSIGN_SUITE:-sid}"  # trixie has only 2.5
COSIGN_PREFIX=/opt/ccpipe/cosign
NATS_SUITE="${CCPIPE_NATS_SUITE:-sid}"      # sid carries the current, patched build; trixie is the stable fallback
PREFIX=/opt/ccpipe/nats-server

need_root() { [ "$(id -u)" = 0 ] || { echo "install-system-deps: run as root (apt-get needs it)" >&2; exit 1; }; }

version_ok() {  # $1 = path to nats-server
  local v
  v=$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p') || return 1
  [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$NATS_MIN" "$v" | sort -V | head -1)" = "$NATS_MIN" ]
}

missing=()
for pair in docker-registry:docker-registry skopeo:skopeo umoci:umoci bwrap:bubblewrap git:git busybox:busybox-static chromium:chromium chromedriver:chromium-driver /usr/lib/postgresql/15/bin/initdb:postgresql softhsm2-util:softhsm2 ip:iproute2 node:nodejs npm:npm linux.uml:user-mode-linux; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  need_root
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

OLD=/opt/ccpipe/nats-server-2.9
install_old_server() {  # Debian 12's own 2.9 server, kept aside only so tests prove ccpipe refuses it
  [ -x "$OLD/usr/sbin/nats-server" ] && return 0
  [ "$(id -u)" = 0 ] || return 0
  local d; d=$(mktemp -d)
  (cd "$d" && apt-get -o APT::Sandbox::User=root download -qq nats-server/bookworm >/dev/null 2>&1) || { rm -rf "$d"; return 0; }
  mkdir -p "$OLD" && dpkg-deb -x "$d"/nats-server_*.deb "$OLD"; rm -rf "$d"
}

cosign_ok() {  # Debian's build says "GitVersion: devel", so the version is the .deb's, recorded at install
  local v
  [ -x "$COSIGN_PREFIX/usr/bin/cosign" ] && [ -f "$COSIGN_PREFIX/DEB_NAME" ] || return 1
  v=$(sed -n 's/^cosign_\([0-9][0-9.]*\).*/\1/p' "$COSIGN_PREFIX/DEB_NAME")
  [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$COSIGN_MIN" "$v" | sort -V | head -1)" = "$COSIGN_MIN" ]
}

nats_installed=0
if command -v nats-server >/dev/null 2>&1 && version_ok "$(command -v nats-server)"; then
  nats_installed=1
elif [ -x "$PREFIX/usr/sbin/nats-server" ] && version_ok "$PREFIX/usr/sbin/nats-server"; then
  ln -sf "$PREFIX/usr/sbin/nats-server" /usr/local/bin/nats-server
  nats_installed=1
fi
if cosign_ok; then
  ln -sf "$COSIGN_PREFIX/usr/bin/cosign" /usr/local/bin/cosign
  if [ "$nats_installed" = 1 ]; then
    install_old_server
    exit 0
  fi
fi
need_root

# The archive URI the machine already uses (deb822 or one-line format).
mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
         | grep -v -- '-security' | grep -i debian | head -1 || true)
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^(http|https|file):/) {print $i; exit}}' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "install-system-deps: cannot find the Debian archive this machine uses in its apt sources" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch_deb() {  # $1 = package, $2 = suite, $3 = prefix: download through apt (verified), unpack under the prefix
  local pkg=$1 suite=$2 prefix=$3 dir="$work/$1" deb
  mkdir -p "$dir/lists/partial" "$dir/archives/partial"
  printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" "$suite" > "$dir/private.sources"
  local aptopts=(-o "APT::Sandbox::User=root" -o "Dir::Etc::sourcelist=$dir/private.sources" -o "Dir::Etc::sourceparts=-"
                 -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache::archives=$dir/archives"
                 -o "APT::Get::List-Cleanup=0")
  apt-get "${aptopts[@]}" update -qq
  (cd "$dir" && apt-get "${aptopts[@]}" download -qq "$pkg/$suite")
  deb=$(ls "$dir/${pkg}"_*.deb)
  rm -rf "$prefix" && mkdir -p "$prefix"
  dpkg-deb -x "$deb" "$prefix"
  sha256sum "$deb" | awk '{print $1}' > "$prefix/DEB_SHA256"
  basename "$deb" > "$prefix/DEB_NAME"
}

if [ "$nats_installed" = 0 ]; then
  fetch_deb nats-server "$NATS_SUITE" "$PREFIX"
  version_ok "$PREFIX/usr/sbin/nats-server" || { echo "install-system-deps: $NATS_SUITE's nats-server is older than $NATS_MIN" >&2; exit 1; }
  ln -sf "$PREFIX/usr/sbin/nats-server" /usr/local/bin/nats-server
  echo "installed $(cat "$PREFIX/DEB_NAME") (sha256 $(cat "$PREFIX/DEB_SHA256")) as /usr/local/bin/nats-server"
fi
if ! cosign_ok; then
  fetch_deb cosign "$COSIGN_SUITE" "$COSIGN_PREFIX"
  cosign_ok || { echo "install-system-deps: $COSIGN_SUITE's cosign is older than $COSIGN_MIN" >&2; exit 1; }
  ln -sf "$COSIGN_PREFIX/usr/bin/cosign" /usr/local/bin/cosign
  echo "installed $(cat "$COSIGN_PREFIX/DEB_NAME") (sha256 $(cat "$COSIGN_PREFIX/DEB_SHA256")) as /usr/local/bin/cosign"
fi
install_old_server
