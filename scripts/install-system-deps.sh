#!/usr/bin/env bash
# Installs the Debian packages ccpipe needs, idempotently:
#   docker-registry skopeo umoci bubblewrap git busybox-static   (from the machine's own suites)
#   nats-server >= 2.10                           (Debian's own build from a newer suite; bookworm's 2.9 is too old)
# The newer nats-server is fetched through a private apt configuration that points at the
# same archive the machine already uses, so apt verifies the signed Release file and the
# package hash; the system's sources are never edited. The binary is unpacked under
# /opt/ccpipe/nats-server and linked as /usr/local/bin/nats-server.
set -euo pipefail

NATS_MIN="2.10.0"
NATS_SUITE="${CCPIPE_NATS_SUITE:-sid}"      # sid carries the current, patched build; trixie is the stable fallback
PREFIX=/opt/ccpipe/nats-server

need_root() { [ "$(id -u)" = 0 ] || { echo "install-system-deps: run as root (apt-get needs it)" >&2; exit 1; }; }

version_ok() {  # $1 = path to nats-server
  local v
  v=$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p') || return 1
  [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$NATS_MIN" "$v" | sort -V | head -1)" = "$NATS_MIN" ]
}

missing=()
for pair in docker-registry:docker-registry skopeo:skopeo umoci:umoci bwrap:bubblewrap git:git busybox:busybox-static chromium:chromium chromedriver:chromium-driver /usr/lib/postgresql/15/bin/initdb:postgresql softhsm2-util:softhsm2; do
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
if command -v nats-server >/dev/null 2>&1 && version_ok "$(command -v nats-server)"; then
  install_old_server
  exit 0
fi
if [ -x "$PREFIX/usr/sbin/nats-server" ] && version_ok "$PREFIX/usr/sbin/nats-server"; then
  ln -sf "$PREFIX/usr/sbin/nats-server" /usr/local/bin/nats-server
  install_old_server
  exit 0
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
mkdir -p "$work/lists/partial" "$work/archives/partial"
printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  "$mirror" "$NATS_SUITE" > "$work/nats.sources"
aptopts=(-o "APT::Sandbox::User=root" -o "Dir::Etc::sourcelist=$work/nats.sources" -o "Dir::Etc::sourceparts=-"
         -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::archives=$work/archives"
         -o "APT::Get::List-Cleanup=0")
apt-get "${aptopts[@]}" update -qq
(cd "$work" && apt-get "${aptopts[@]}" download -qq "nats-server/$NATS_SUITE")
deb=$(ls "$work"/nats-server_*.deb)
rm -rf "$PREFIX" && mkdir -p "$PREFIX"
dpkg-deb -x "$deb" "$PREFIX"
sha256sum "$deb" | awk '{print $1}' > "$PREFIX/DEB_SHA256"
basename "$deb" > "$PREFIX/DEB_NAME"
version_ok "$PREFIX/usr/sbin/nats-server" || { echo "install-system-deps: $NATS_SUITE's nats-server is older than $NATS_MIN" >&2; exit 1; }
ln -sf "$PREFIX/usr/sbin/nats-server" /usr/local/bin/nats-server
echo "installed $(cat "$PREFIX/DEB_NAME") (sha256 $(cat "$PREFIX/DEB_SHA256")) as /usr/local/bin/nats-server"
install_old_server
