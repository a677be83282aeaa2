#!/usr/bin/env bash
# Puts the demo clip (PETS2009 S2.L1 view 1, "vtest.avi" as shipped in Debian's opencv-doc) at
# .data/vtest.avi, verified by sha256, and records where it came from in .data/PROVENANCE.
# Source order: $VAKT_DATA_MIRROR (default ../shared/data, a local mirror), then Debian's
# opencv-doc package (apt-get download; no root needed for the download itself).
# Idempotent. The clip is research data for evaluation: it is never packaged or committed.
set -euo pipefail
cd "$(dirname "$0")/.."
SHA=45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf
out=.data/vtest.avi
mkdir -p .data
ok() { [ -f "$1" ] && echo "$SHA  $1" | sha256sum -c --status; }
if ok "$out"; then exit 0; fi
mirror="${VAKT_DATA_MIRROR:-../shared/data}/video/pets09-s2l1/vtest.avi"
if ok "$mirror"; then
  cp "$mirror" "$out.tmp" && mv "$out.tmp" "$out"
  echo "vtest.avi sha256 $SHA copied from local mirror $mirror on $(date -u +%FT%TZ) (origin: Debian opencv-doc 4.6.0 examples/data/vtest.avi, PETS2009 S2.L1)" > .data/PROVENANCE
else
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download opencv-doc >/dev/null 2>&1) || {
    echo "fetch-demo-clip: cannot download Debian's opencv-doc (run 'apt-get update' first?)" >&2; exit 1; }
  dpkg-deb -x "$tmp"/opencv-doc_*.deb "$tmp/x"
  f=$(find "$tmp/x" -name vtest.avi | head -1)
  ok "$f" || { echo "fetch-demo-clip: vtest.avi from opencv-doc does not match sha256 $SHA" >&2; exit 1; }
  cp "$f" "$out.tmp" && mv "$out.tmp" "$out"
  echo "vtest.avi sha256 $SHA extracted from $(basename "$tmp"/opencv-doc_*.deb) on $(date -u +%FT%TZ)" > .data/PROVENANCE
fi
echo "fetch-demo-clip: $out ready ($(cat .data/PROVENANCE))"
