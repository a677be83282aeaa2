#!/usr/bin/env bash
# Debian packages of Vakt for amd64 and arm64, from binaries built once.
#
#   bash deploy/package.sh [--arch amd64|arm64|all] [--no-build]
#
# 1. builds the release binary for each architecture (skipped with --no-build: CI packages the
#    binaries its test stages built and tested);
# 2. fetches and verifies the models into .data/package-models (models/fetch.sh: local mirror
#    first, then the upstream URL; every file checked against the manifest's sha256);
# 3. runs cargo-deb with --no-build for each architecture.
# Output: target/debian/vakt_<version>_<arch>.deb (stripped) and vakt-dbgsym_..._<arch>.ddeb (debug symbols). Needs deploy/setup-dev.sh and, for arm64,
# deploy/cross/setup-arm64.sh. Installs cargo-deb (pinned) into target/tools when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
arch=all; build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "usage: bash deploy/package.sh [--arch amd64|arm64|all] [--no-build]" >&2; exit 2 ;;
  esac
done
case "$arch" in amd64|arm64|all) ;; *) echo "package: --arch must be amd64, arm64 or all, not '$arch'" >&2; exit 2 ;; esac

CARGO_DEB_VERSION=3.8.0
tools="$PWD/target/tools"
if ! "$tools/bin/cargo-deb" --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  echo "package: installing cargo-deb $CARGO_DEB_VERSION into $tools"
  cargo install --quiet --locked --version "$CARGO_DEB_VERSION" --root "$tools" cargo-deb
fi
export PATH="$tools/bin:$PATH"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
# dpkg-shlibdeps (dpkg-dev) computes the library dependencies ($auto) for each architecture.
dpkg-query -W -f='${Status}' dpkg-dev 2>/dev/null | grep -q "install ok installed" || {
  $SUDO apt-get install -y -qq --no-install-recommends dpkg-dev >/dev/null; }

bash models/fetch.sh .data/package-models
mkdir -p target/debian
# only this build's packages: check-packages.sh must never pick up an older one
[ "$arch" = all ] && rm -f target/debian/vakt*.deb target/debian/vakt*.ddeb
[ "$arch" != all ] && rm -f target/debian/vakt*_"$arch".deb target/debian/vakt*_"$arch".ddeb

if [ "$arch" = amd64 ] || [ "$arch" = all ]; then
  [ "$build" = 1 ] && cargo build --release --locked -p vakt
  [ -x "${CARGO_TARGET_DIR:-target}/release/vakt" ] || { echo "package: ${CARGO_TARGET_DIR:-target}/release/vakt is missing (build first)" >&2; exit 1; }
  cargo deb --no-build --locked --dbgsym -p vakt -o target/debian/
fi
if [ "$arch" = arm64 ] || [ "$arch" = all ]; then
  [ "$build" = 1 ] && bash deploy/cross/cargo-arm64.sh build --release --locked -p vakt
  bin=${CARGO_TARGET_DIR_ARM64:-target/aarch64}/aarch64-unknown-linux-gnu/release/vakt
  [ -x "$bin" ] || { echo "package: $bin is missing (build first)" >&2; exit 1; }
  # cargo-deb strips with the target's binutils
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_STRIP=aarch64-linux-gnu-strip \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_OBJCOPY=aarch64-linux-gnu-objcopy \
    bash deploy/cross/cargo-arm64.sh deb --no-build --locked --dbgsym -p vakt --target aarch64-unknown-linux-gnu \
    -o "$PWD/target/debian/"
fi
ls -l target/debian/*.deb
