#!/usr/bin/env bash
# Checks that each Debian package contains what it should, and that its unit is valid and hardened.
#
#   bash deploy/check-packages.sh [--install]
#
# For target/debian/vakt_*_{amd64,arm64}.deb: control fields and library dependencies, conffiles,
# maintainer scripts, the binary's architecture and stripping, every model file against the
# manifests' sha256, board profiles and docs; then, in a scratch root, `systemd-analyze verify`
# (no output allowed) and `systemd-analyze security --offline=yes` (exposure must stay <= 2.0);
# the packaged config must fail `check-config` (exit 2, naming box.id), run under qemu for arm64.
# --install (root only) also installs the amd64 package for real with apt, checks the user,
# groups and permissions postinst sets, then purges it and checks that state is kept; then installs
# it again, provisions it with a hold, and checks that purge decommissions it (signed report).
set -euo pipefail
cd "$(dirname "$0")/.."
install=0; [ "${1:-}" = --install ] && install=1
fail() { echo "check-packages: FAIL: $*" >&2; exit 1; }
note() { echo "check-packages: $*"; }
command -v systemd-analyze >/dev/null || {
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get install -y -qq --no-install-recommends systemd >/dev/null; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
MAX_EXPOSURE=2.0

for arch in amd64 arm64; do
  deb=$(ls target/debian/vakt_*_"$arch".deb 2>/dev/null | head -1)
  [ -n "$deb" ] || fail "no target/debian/vakt_*_$arch.deb (run deploy/package.sh)"
  note "$deb"
  field() { dpkg-deb -f "$deb" "$1"; }
  [ "$(field Package)" = vakt ] || fail "$deb: Package is '$(field Package)'"
  [ "$(field Architecture)" = "$arch" ] || fail "$deb: Architecture is '$(field Architecture)'"
  deps=$(field Depends)
  for d in adduser libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 libopencv-core406 libopencv-imgproc406 \
           gstreamer1.0-plugins-base gstreamer1.0-plugins-good; do
    grep -q "\b$d\b" <<<"$deps" || fail "$deb: Depends lacks $d: $deps"
  done
  ctl="$work/$arch-control"; dpkg-deb -e "$deb" "$ctl"
  [ "$(cat "$ctl/conffiles")" = /etc/vakt/vakt.toml ] || fail "$deb: conffiles is '$(cat "$ctl/conffiles")'"
  for s in postinst prerm postrm; do [ -x "$ctl/$s" ] || fail "$deb: no executable $s"; done
  grep -q "adduser --system" "$ctl/postinst" || fail "$deb: postinst creates no system user"
  grep -q "chmod 0640 /etc/vakt/vakt.toml" "$ctl/postinst" || fail "$deb: postinst leaves the config readable to all"
  grep -q "decommissioned" "$ctl/postrm" || fail "$deb: postrm does not guard the state directory"

  root="$work/$arch-root"; dpkg-deb -x "$deb" "$root"
  for f in usr/bin/vakt etc/vakt/vakt.toml lib/systemd/system/vakt.service lib/udev/rules.d/60-vakt-gpio.rules \
           usr/share/vakt/hardware/generic.toml usr/share/vakt/hardware/raspberry-pi-5.toml \
           usr/share/doc/vakt/guide/technician.md usr/share/doc/vakt/ref/config.md usr/share/doc/vakt/copyright \
           usr/share/vakt/models/PROVENANCE; do
    [ -e "$root/$f" ] || fail "$deb: /$f is missing"
  done
  cmp -s deploy/systemd/vakt.service "$root/lib/systemd/system/vakt.service" || fail "$deb: unit differs from deploy/systemd"
  cmp -s deploy/config/vakt.toml "$root/etc/vakt/vakt.toml" || fail "$deb: config differs from deploy/config/vakt.toml"
  # ELF machine: 62 = x86-64, 183 = AArch64; stripped: no .debug_info section
  want=62; [ "$arch" = arm64 ] && want=183
  machine=$(python3 -c 'import sys,struct; d=open(sys.argv[1],"rb").read(20); print(struct.unpack("<H", d[18:20])[0])' "$root/usr/bin/vakt")
  [ "$machine" = "$want" ] || fail "$deb: /usr/bin/vakt has ELF machine $machine, expected $want"
  if readelf -S "$root/usr/bin/vakt" | grep -q '\.debug_info'; then fail "$deb: /usr/bin/vakt is not stripped"; fi
  # every file of every manifest, by sha256
  python3 - "$root/usr/share/vakt/models" models/*.toml <<'PY' || fail "$deb: models do not match their manifests"
import hashlib, pathlib, sys, tomllib
root = pathlib.Path(sys.argv[1]); bad = 0; n = 0
for manifest in sys.argv[2:]:
    m = tomllib.loads(pathlib.Path(manifest).read_text())
    for f in m["files"]:
        p = root / m["name"] / f["path"]; n += 1
        if not p.is_file():
            print(f"  missing {p}"); bad += 1
        elif hashlib.sha256(p.read_bytes()).hexdigest() != f["sha256"]:
            print(f"  sha256 mismatch {p}"); bad += 1
print(f"  {n} model files checked, {bad} bad")
sys.exit(1 if bad else 0)
PY
  # the unit, in a scratch root with the binary in place and the system's own units beside it
  mkdir -p "$root/etc/systemd/system" && cp -rn /lib/systemd/system/. "$root/lib/systemd/system/" 2>/dev/null || true
  out=$(systemd-analyze verify --root="$root" --man=no /lib/systemd/system/vakt.service 2>&1) \
    || fail "$deb: systemd-analyze verify: $out"
  [ -z "$out" ] || fail "$deb: systemd-analyze verify complained: $out"
  score=$(systemd-analyze security --offline=yes --root="$root" vakt.service 2>/dev/null \
          | sed -n 's/.*Overall exposure level for vakt.service: \([0-9.]*\).*/\1/p')
  [ -n "$score" ] || fail "$deb: no exposure score from systemd-analyze security"
  python3 -c "import sys; sys.exit(0 if float('$score') <= $MAX_EXPOSURE else 1)" \
    || fail "$deb: systemd-analyze security exposure $score > $MAX_EXPOSURE"
  note "  unit verifies; systemd-analyze security exposure $score (limit $MAX_EXPOSURE)"
  # the packaged config refuses to run until provisioned
  run=("$root/usr/bin/vakt")
  [ "$arch" = arm64 ] && run=(env QEMU_LD_PREFIX=/ GST_REGISTRY_FORK=no qemu-aarch64-static "$root/usr/bin/vakt")
  set +e; msg=$("${run[@]}" --config "$root/etc/vakt/vakt.toml" check-config 2>&1); rc=$?; set -e
  [ "$rc" = 2 ] || fail "$deb: packaged config: check-config exited $rc, expected 2: $msg"
  grep -q 'box' <<<"$msg" || fail "$deb: packaged config error does not name the key: $msg"
  version=$("${run[@]}" --version)
  note "  $version runs; packaged config refused as it should: ${msg%%$'\n'*}"
done

if [ "$install" = 1 ] && dpkg-query -W -f='${Status}' vakt 2>/dev/null | grep -q "install ok installed"; then
  note "vakt is installed on this machine already: the install test is skipped, so as not to purge it"
elif [ "$install" = 1 ]; then
  [ "$(id -u)" = 0 ] || fail "--install needs root"
  deb=$(ls "$PWD"/target/debian/vakt_*_amd64.deb | head -1)
  note "installing $deb for real"
  apt-get install -y -qq "$deb" >/dev/null
  id vakt >/dev/null || fail "no vakt user after install"
  for g in video gpio; do id -nG vakt | grep -qw "$g" || fail "vakt is not in group $g"; done
  [ "$(stat -c '%U:%G %a' /etc/vakt/vakt.toml)" = "root:vakt 640" ] || fail "/etc/vakt/vakt.toml is $(stat -c '%U:%G %a' /etc/vakt/vakt.toml)"
  [ "$(getent passwd vakt | cut -d: -f7)" = /usr/sbin/nologin ] || fail "vakt user has a login shell"
  set +e; /usr/bin/vakt --config /etc/vakt/vakt.toml check-config >/dev/null 2>&1; rc=$?; set -e
  [ "$rc" = 2 ] || fail "installed config: check-config exited $rc, expected 2"
  mkdir -p /var/lib/vakt && echo kept > /var/lib/vakt/audit.log
  msg=$(dpkg --purge vakt 2>&1)
  [ ! -e /usr/bin/vakt ] || fail "/usr/bin/vakt still there after purge"
  [ -f /var/lib/vakt/audit.log ] || fail "purge deleted /var/lib/vakt without a decommission"
  grep -q "was kept" <<<"$msg" || fail "purge did not say that the state was kept: $msg"
  rm -rf /var/lib/vakt
  note "  install, user and permissions, purge keeping state: ok"

  # A provisioned box with an evidence hold: purge decommissions it (issue 5, Trelleborg).
  apt-get install -y -qq "$deb" >/dev/null
  cat > /etc/vakt/vakt.toml <<'TOML'
[box]
id = "pkg-test"
site = "pkg-site"
state_dir = "/var/lib/vakt"
[source]
uri = "file:///dev/null"
[mqtt]
url = "mqtt://127.0.0.1:1883"
insecure_plaintext = true
[storage]
dir = "/var/lib/vakt/ring"
record = false
TOML
  install -d -o vakt -g vakt -m 0750 /var/lib/vakt
  as_vakt=(runuser -u vakt -- /usr/bin/vakt --config /etc/vakt/vakt.toml)
  "${as_vakt[@]}" provision >/dev/null || fail "provision as vakt failed"
  now=$(date -u +%s)
  "${as_vakt[@]}" hold --from "$(date -u -d @$((now - 600)) +%FT%TZ)" --to "$(date -u -d @$((now - 60)) +%FT%TZ)" \
    --until "$(date -u -d @$((now + 86400)) +%FT%TZ)" --requester police-4711 --reason "case K-1" >/dev/null \
    || fail "hold as vakt failed"
  msg=$(dpkg --purge vakt 2>&1) || fail "purge of a provisioned box failed: $msg"
  [ ! -e /var/lib/vakt ] || fail "purge kept /var/lib/vakt after decommissioning: $msg"
  out=$(ls -d /var/lib/vakt-decommission/*/ | head -1)
  [ -n "$out" ] && [ -f "$out/decommission.json" ] || fail "purge wrote no decommission report: $msg"
  grep -q '"requester": "dpkg-purge"' "$out/decommission.json" || fail "report does not name dpkg-purge"
  [ "$(jq '.holds_not_readable | length' "$out/decommission.json")" = 1 ] \
    || fail "the hold is not accounted for in the report: $(cat "$out/decommission.json")"
  grep -q '"decommission.completed"' "$out/audit.log" || fail "the exported audit log lacks decommission.completed"
  # the report's Ed25519 signature checks with OpenSSL alone, against the key in the directory
  xxd -r -p "$out/decommission.sig" > "$work/sig.bin"
  openssl pkeyutl -verify -pubin -inkey "$out/box-signing.pub" -rawin -in "$out/decommission.json" \
    -sigfile "$work/sig.bin" >/dev/null || fail "decommission.sig does not verify with openssl"
  rm -rf /var/lib/vakt-decommission
  note "  purge of a provisioned box: decommissioned into $out, signature verified, state removed: ok"
fi
note "all packages ok"
