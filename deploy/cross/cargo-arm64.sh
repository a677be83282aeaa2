#!/usr/bin/env bash
# cargo for aarch64-unknown-linux-gnu: `bash deploy/cross/cargo-arm64.sh build --release -p vakt`.
# Runs any cargo subcommand with the target, the cross linker, pkg-config and OpenCV probes set,
# and qemu-aarch64-static as the runner (so `test` and `run` execute under emulation).
# Artifacts go to target/aarch64 (a separate target dir: the cross rustc is Debian's 1.96, the
# native one rustup's 1.95, and they would otherwise keep rebuilding each other's artifacts).
# Requires deploy/cross/setup-arm64.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
X="${VAKT_CROSS_DIR:-/opt/vakt-cross-arm64}"
L="$X/gst-pb-dev/usr/lib/aarch64-linux-gnu"
[ -f "$L/pkgconfig/gstreamer-video-1.0.pc" ] || {
  echo "cargo-arm64: the cross setup is missing ($L); run: bash deploy/cross/setup-arm64.sh" >&2; exit 2; }
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC=/usr/bin/rustc          # Debian's rustc-web: the only rustc here with an aarch64 std
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_ARM64:-$PWD/target/aarch64}"
export CARGO_BUILD_TARGET=aarch64-unknown-linux-gnu
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export PKG_CONFIG_ALLOW_CROSS=1
# LIBDIR, not PATH: a missing arm64 .pc must fail, not silently resolve to the amd64 one.
export PKG_CONFIG_LIBDIR_aarch64_unknown_linux_gnu="$L/pkgconfig:/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig"
# The opencv crate's environment probe (opencv4.pc for arm64 cannot be installed). Only the
# target's opencv is built here, so these do not leak into a host build.
export OPENCV_LINK_LIBS=opencv_core,opencv_imgproc,opencv_video,opencv_dnn   # video needs dnn (its trackers)
export OPENCV_LINK_PATHS=/usr/lib/aarch64-linux-gnu
export OPENCV_INCLUDE_PATHS=/usr/include/opencv4,/usr/include/aarch64-linux-gnu/opencv4
# qemu: the multiarch loader and libc6:arm64 in / (never -L /usr/aarch64-linux-gnu: mixed glibc
# versions hang the first pthread_create).
export QEMU_LD_PREFIX=/
# without binfmt_misc GStreamer cannot exec the arm64 plugin scanner; scan in-process
export GST_REGISTRY_FORK=no
exec cargo "$@"
