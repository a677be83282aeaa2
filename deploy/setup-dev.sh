#!/usr/bin/env bash
# Installs what building, running and testing Vakt needs on Debian bookworm (x86_64).
# Idempotent: it installs only what is missing. Run as root (CI is root) or with sudo.
#
#   bash deploy/setup-dev.sh          # build + runtime + test dependencies
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

pkgs=(
  pkg-config clang libclang-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
  libopencv-dev
  mosquitto mosquitto-clients
  ca-certificates
  python3 python3-venv binutils curl
  strace jq xxd openssl
  swtpm tpm2-tools libtss2-tcti-swtpm0
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "setup-dev: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Rust: rustup's toolchain when present (CI and developer machines); otherwise Debian's
# rustc-web/cargo-web 1.96 (bookworm), which builds Vakt too.
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "setup-dev: no cargo found; installing Debian's rustc-web and cargo-web"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends rustc-web cargo-web >/dev/null
fi
# mosquitto's Debian package starts a system broker on :1883; Vakt's tests start their own on free ports.
echo "setup-dev: system packages present"
