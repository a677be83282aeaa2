#!/usr/bin/env bash
# Installs what cross-building Vakt for aarch64 (arm64) and running its tests under qemu needs,
# on a Debian bookworm x86_64 machine. Idempotent: installs only what is missing, and rebuilds the
# shims only when they are absent. Run as root (CI is root) or with sudo. Needs deploy/setup-dev.sh
# first (the amd64 -dev packages whose headers the cross build shares).
#
#   bash deploy/cross/setup-arm64.sh      then   bash deploy/cross/cargo-arm64.sh build ...
#
# Why it looks like this (verified facts, see edge/docs/guide/cross-build.md):
# - rustup cannot fetch an aarch64 std here; Debian's rustc-web 1.96 ships one
#   (libstd-rust-web-dev:arm64). cargo-arm64.sh runs cargo with RUSTC=/usr/bin/rustc.
# - libgstreamer-plugins-base1.0-dev:arm64 and libopencv-dev:arm64 cannot be co-installed with
#   their amd64 twins; we extract the first into a side directory and probe OpenCV through the
#   opencv crate's environment variables instead of opencv4.pc.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
X="${VAKT_CROSS_DIR:-/opt/vakt-cross-arm64}"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

pkgs=(
  rustc-web cargo-web libstd-rust-web-dev:arm64
  gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
  # Multi-Arch: same pieces only (co-install with the amd64 -dev packages)
  libgstreamer1.0-dev:arm64 libgstreamer-plugins-base1.0-0:arm64 liborc-0.4-dev:arm64
  libopencv-core-dev:arm64 libopencv-imgproc-dev:arm64 libopencv-video-dev:arm64 libopencv-dnn-dev:arm64
  # what the tests need at run time under qemu
  gstreamer1.0-plugins-base:arm64 gstreamer1.0-plugins-good:arm64 gstreamer1.0-libav:arm64
)
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "setup-arm64: adding the arm64 architecture to dpkg"
  $SUDO dpkg --add-architecture arm64
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-arm64: installing ${#missing[@]} packages: ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# gstreamer-app/-video .pc files for arm64, from the package that cannot be co-installed.
L="$X/gst-pb-dev/usr/lib/aarch64-linux-gnu"
if [ ! -f "$L/pkgconfig/gstreamer-video-1.0.pc" ]; then
  echo "setup-arm64: extracting libgstreamer-plugins-base1.0-dev:arm64 into $X/gst-pb-dev"
  $SUDO mkdir -p "$X"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download libgstreamer-plugins-base1.0-dev:arm64 >/dev/null)
  $SUDO rm -rf "$X/gst-pb-dev"
  $SUDO dpkg-deb -x "$tmp"/libgstreamer-plugins-base1.0-dev_*_arm64.deb "$X/gst-pb-dev"
  for l in "$L"/*.so; do $SUDO ln -sfn "/usr/lib/aarch64-linux-gnu/$(readlink "$l")" "$l"; done
  $SUDO sed -i "s|^libdir=.*|libdir=$L|" "$L"/pkgconfig/*.pc
fi
echo "setup-arm64: cross toolchain present ($(/usr/bin/rustc --version), $(qemu-aarch64-static --version | head -1))"
