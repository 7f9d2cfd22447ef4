#!/usr/bin/env bash
# Builds the edge bridge's Debian package: /usr/bin/edge-bridge, its systemd unit, and /etc/switchyard/edge-bridge.env
# (a conffile: an upgrade keeps your settings).
#   infra/edge/build-deb.sh                       release build for this machine's architecture
#   infra/edge/build-deb.sh --target aarch64-unknown-linux-gnu
#                                                 a Raspberry Pi 4/5 (64-bit OS) build; needs
#                                                 `rustup target add aarch64-unknown-linux-gnu` and Debian's
#                                                 gcc-aarch64-linux-gnu (or build on the Pi itself)
#   infra/edge/build-deb.sh --binary PATH         package a binary built elsewhere (--arch names its architecture)
# Options: --out DIR (default target/debian), --arch amd64|arm64|armhf; DEB_COMPRESSION=xz|gzip|none.
# Install on the venue's box, with the settings the console showed, in one command:
#   sudo BRIDGE_CLOUD_URL=wss://<host>/edge/v1/tunnel BRIDGE_TOKEN=<token> apt install ./edge-bridge_<v>_<arch>.deb
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
binary="" target="" out="${CARGO_TARGET_DIR:-$ROOT/target}/debian" arch=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$binary" ]; then
  if [ -n "$target" ]; then
    linker_var="CARGO_TARGET_$(printf '%s' "$target" | tr 'a-z-' 'A-Z_')_LINKER"
    case "$target" in
      aarch64-unknown-linux-gnu) export "$linker_var"="${!linker_var:-aarch64-linux-gnu-gcc}"; arch=${arch:-arm64} ;;
      armv7-unknown-linux-gnueabihf) export "$linker_var"="${!linker_var:-arm-linux-gnueabihf-gcc}"; arch=${arch:-armhf} ;;
    esac
    (cd "$ROOT" && cargo build --release --locked -p edge-bridge --bin edge-bridge --target "$target")
    binary="${CARGO_TARGET_DIR:-$ROOT/target}/$target/release/edge-bridge"
  else
    (cd "$ROOT" && cargo build --release --locked -p edge-bridge --bin edge-bridge)
    binary="${CARGO_TARGET_DIR:-$ROOT/target}/release/edge-bridge"
  fi
fi
arch=${arch:-$(dpkg --print-architecture)}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/edge-bridge/Cargo.toml" | head -n 1)
[ -n "$version" ] || version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml")
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"
install -D -m 0755 "$binary" "$stage/usr/bin/edge-bridge"
install -D -m 0644 "$ROOT/infra/systemd/edge-bridge.service" "$stage/lib/systemd/system/edge-bridge.service"
install -D -m 0600 "$ROOT/infra/edge/edge-bridge.env" "$stage/etc/switchyard/edge-bridge.env"
mkdir -p "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: edge-bridge
Version: $version
Architecture: $arch
Maintainer: Switchyard <ops@switchyard.example>
Section: net
Priority: optional
Depends: systemd
Installed-Size: $(du -k "$stage/usr/bin/edge-bridge" | cut -f1)
Description: Switchyard edge bridge
 Connects a venue's smart plugs, routers, PC agents, powerbank cabinets and
 OCPP chargers to the Switchyard cloud through one outgoing tunnel, and keeps
 sessions ending on time while the venue is offline.
CONTROL
echo /etc/switchyard/edge-bridge.env > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
settings="${DPKG_ROOT:-}/etc/switchyard/edge-bridge.env"
if [ "$1" = configure ]; then
  # Settings given on the install command line fill in an empty settings file.
  for key in BRIDGE_CLOUD_URL BRIDGE_TOKEN; do
    value=$(printenv "$key" || true)
    if [ -n "$value" ] && grep -q "^$key=$" "$settings"; then
      sed -i "s|^$key=$|$key=$value|" "$settings"
    fi
  done
  if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if grep -q '^BRIDGE_TOKEN=..*' "$settings" && grep -q '^BRIDGE_CLOUD_URL=..*' "$settings"; then
      systemctl enable edge-bridge.service >/dev/null
      systemctl restart edge-bridge.service
      echo "edge-bridge is running: journalctl -u edge-bridge -f"
    else
      echo "edge-bridge installed: set BRIDGE_CLOUD_URL and BRIDGE_TOKEN in $settings, then"
      echo "  systemctl enable --now edge-bridge"
    fi
  fi
fi
POSTINST
cat > "$stage/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl disable --now edge-bridge.service >/dev/null 2>&1 || true
fi
PRERM
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm"
mkdir -p "$out"
package="$out/edge-bridge_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"${DEB_COMPRESSION:-xz}" --build "$stage" "$package" >/dev/null
echo "$package"
