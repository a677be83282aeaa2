#!/usr/bin/env bash
# Fills DEST/<name>/<path> with every file named in models/*.toml, each verified by its sha256
# before it is moved into place, and records where each file came from in DEST/PROVENANCE.
#
#   models/fetch.sh DEST [--mirror DIR] [--only NAME,NAME] [--offline]
#
# Per file: kept if already present with the right sha256; otherwise copied from the mirror
# (<mirror>/<name>/<path>: --mirror, else $VAKT_MODEL_MIRROR, else ../shared/data/models from
# the repository root if it exists), else downloaded from its `url` with curl (unless --offline).
# Whatever the source, the copy lands in a temporary file next to its target, is checked
# against the manifest's sha256 and only then renamed into place; a mismatch is reported with
# the expected and actual checksums and the file is not installed. Exits non-zero if any file
# could not be installed. Needs bash, python3 >= 3.11 (tomllib), sha256sum; curl to download.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
prog=models/fetch.sh

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}
die() { echo "$prog: $*" >&2; exit 1; }

dest="" mirror="" mirror_given=0 only="" offline=0
while [ $# -gt 0 ]; do
  case "$1" in
    --mirror) [ $# -ge 2 ] || die "--mirror needs a directory"; mirror=$2; mirror_given=1; shift 2 ;;
    --mirror=*) mirror=${1#--mirror=}; mirror_given=1; shift ;;
    --only) [ $# -ge 2 ] || die "--only needs a comma-separated list of model names"; only=$2; shift 2 ;;
    --only=*) only=${1#--only=}; shift ;;
    --offline) offline=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [ -z "$dest" ] || die "only one DEST may be given ('$dest', then '$1')"; dest=$1; shift ;;
  esac
done
[ -n "$dest" ] || { usage >&2; exit 2; }

if [ "$mirror_given" = 0 ] && [ -n "${VAKT_MODEL_MIRROR:-}" ]; then
  mirror=$VAKT_MODEL_MIRROR; mirror_given=1
fi
if [ "$mirror_given" = 1 ]; then
  [ -d "$mirror" ] || die "mirror '$mirror' is not a directory"
elif [ -d "$root/../shared/data/models" ]; then
  mirror=$root/../shared/data/models
fi
[ -z "$mirror" ] || mirror=$(cd "$mirror" && pwd -P)

command -v python3 >/dev/null || die "python3 (>= 3.11, for tomllib) is required"
command -v sha256sum >/dev/null || die "sha256sum (coreutils) is required"
have_curl=0; command -v curl >/dev/null && have_curl=1

# Reads and checks every manifest (the same rules as the Rust parser: exactly these keys), then
# prints one line per file to fetch: name TAB path TAB sha256 TAB url.
list=$(ONLY="$only" python3 - "$here" <<'PY'
import os, re, sys
try:
    import tomllib
except ImportError:
    sys.exit("models/fetch.sh: python3 >= 3.11 is required (tomllib)")

top_keys = {"name", "description", "task", "licence", "upstream", "input", "output", "labels", "files"}
file_keys = {"path", "sha256", "url", "role"}
tasks = {"object-detection", "face-detection"}
roles = {"weights", "licence", "labels"}
seg = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
errors, rows, names = [], [], []

def err(where, msg):
    errors.append(f"{where}: {msg}")

mdir = sys.argv[1]
for fn in sorted(os.listdir(mdir)):
    if not fn.endswith(".toml"):
        continue
    where = f"models/{fn}"
    try:
        with open(os.path.join(mdir, fn), "rb") as f:
            m = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        err(where, f"cannot be read: {e}")
        continue
    for k in sorted(set(m) - top_keys):
        err(where, f"unknown key '{k}'")
    for k in sorted(top_keys - set(m)):
        err(where, f"missing key '{k}'")
    for k in sorted(top_keys - {"labels", "files"}):
        if k in m and not (isinstance(m[k], str) and m[k].strip()):
            err(where, f"'{k}' must be a non-empty string")
    name = m.get("name")
    if name != fn[:-5]:
        err(where, f"name {name!r} must equal the file stem {fn[:-5]!r}")
        continue
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name):
        err(where, f"name {name!r} must be lower-case letters, digits, '_', '.', '-'")
    if "\n" in m.get("description", ""):
        err(where, "description must be one line")
    if m.get("task") not in tasks:
        err(where, f"task must be one of {sorted(tasks)}")
    labels = m.get("labels")
    if not (isinstance(labels, list) and labels and all(isinstance(l, str) and l for l in labels)):
        err(where, "labels must be a non-empty list of non-empty strings")
    files = m.get("files")
    if not (isinstance(files, list) and files):
        err(where, "files must be a non-empty array of tables ([[files]])")
        continue
    names.append(name)
    seen = set()
    for i, fe in enumerate(files):
        fw = f"{where} files[{i}]"
        if not isinstance(fe, dict):
            err(fw, "must be a table")
            continue
        for k in sorted(set(fe) - file_keys):
            err(fw, f"unknown key '{k}'")
        for k in sorted(file_keys - set(fe)):
            err(fw, f"missing key '{k}'")
        p, h, u, r = (fe.get(k) for k in ("path", "sha256", "url", "role"))
        if not (isinstance(p, str) and all(seg.fullmatch(s) for s in p.split("/"))):
            err(fw, f"path {p!r} must be relative, without '..', spaces or empty parts")
        elif p in seen:
            err(fw, f"path {p!r} is listed twice")
        seen.add(p)
        if not (isinstance(h, str) and re.fullmatch(r"[0-9a-f]{64}", h)):
            err(fw, "sha256 must be 64 lower-case hex digits")
        if not (isinstance(u, str) and re.fullmatch(r"https://\S+", u)):
            err(fw, "url must be an https:// URL without spaces")
        if r not in roles:
            err(fw, f"role must be one of {sorted(roles)}")
        rows.append((name, p, h, u))
    got = [fe.get("role") for fe in files if isinstance(fe, dict)]
    if "weights" not in got:
        err(where, "no file with role \"weights\"")
    if "licence" not in got:
        err(where, "no file with role \"licence\"")

only = [n.strip() for n in os.environ.get("ONLY", "").split(",") if n.strip()]
for n in only:
    if n not in names:
        errors.append(f"--only: no manifest models/{n}.toml (known: {', '.join(names) or 'none'})")
if not names and not errors:
    errors.append("no manifests (models/*.toml) found")
if errors:
    sys.exit("models/fetch.sh: invalid manifests or arguments:\n  " + "\n  ".join(errors))
for row in rows:
    if not only or row[0] in only:
        print("\t".join(row))
PY
) || exit 1

mkdir -p "$dest" || die "cannot create '$dest'"
dest=$(cd "$dest" && pwd -P)

tmps=()
cleanup() { [ ${#tmps[@]} -eq 0 ] || rm -f -- "${tmps[@]}"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

sha_of() { sha256sum < "$1" | cut -d' ' -f1; }
now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# Provenance from earlier runs: kept files keep their original line.
declare -A prov=()
if [ -f "$dest/PROVENANCE" ]; then
  while IFS= read -r line; do
    case "$line" in '#'*|'') continue ;; esac
    prov[${line%%$'\t'*}]=$line
  done < "$dest/PROVENANCE"
fi

n_kept=0 n_copied=0 n_downloaded=0 failed=()
while IFS=$'\t' read -r name path sha url; do
  [ -n "$name" ] || continue
  key=$name/$path
  target=$dest/$name/$path
  if [ -f "$target" ]; then
    actual=$(sha_of "$target")
    if [ "$actual" = "$sha" ]; then
      old=${prov[$key]:-}
      old_sha=$(printf '%s' "$old" | cut -f2)
      if [ "$old_sha" != "$sha" ]; then
        prov[$key]=$key$'\t'$sha$'\t'"already present before this run (origin not recorded)"$'\t'$(now)
      fi
      n_kept=$((n_kept + 1))
      echo "kept        $key"
      continue
    fi
    echo "$prog: $key is present but its sha256 is $actual, not $sha: replacing it" >&2
  fi
  unset 'prov[$key]'
  mkdir -p "$(dirname "$target")" || { failed+=("$key"); continue; }
  tmp=$(mktemp "$(dirname "$target")/.$(basename "$path").XXXXXX")
  tmps+=("$tmp")
  reasons=() source=""

  if [ -n "$mirror" ] && [ -f "$mirror/$name/$path" ]; then
    if cp -- "$mirror/$name/$path" "$tmp" 2>/dev/null; then
      actual=$(sha_of "$tmp")
      if [ "$actual" = "$sha" ]; then
        source="mirror $mirror/$name/$path"
      else
        reasons+=("mirror copy $mirror/$name/$path: sha256 mismatch: expected $sha, actual $actual")
      fi
    else
      reasons+=("mirror copy $mirror/$name/$path: cannot be read")
    fi
  elif [ -n "$mirror" ]; then
    reasons+=("mirror: no $mirror/$name/$path")
  else
    reasons+=("mirror: none (no --mirror, no \$VAKT_MODEL_MIRROR, no ../shared/data/models)")
  fi

  if [ -z "$source" ]; then
    if [ "$offline" = 1 ]; then
      reasons+=("download: skipped (--offline)")
    elif [ "$have_curl" = 0 ]; then
      reasons+=("download: curl is not installed")
    elif out=$(curl --fail --silent --show-error --location --proto '=https' --proto-redir '=https' \
                 --connect-timeout 20 --retry 2 --max-time 900 -o "$tmp" -- "$url" 2>&1 </dev/null); then
      actual=$(sha_of "$tmp")
      if [ "$actual" = "$sha" ]; then
        source=$url
      else
        reasons+=("download $url: sha256 mismatch: expected $sha, actual $actual")
      fi
    else
      reasons+=("download $url: failed: $(printf '%s\n' "$out" | grep . | tail -n 1)")
    fi
  fi

  if [ -z "$source" ]; then
    rm -f -- "$tmp"
    rmdir -- "$(dirname "$target")" 2>/dev/null || true
    {
      echo "$prog: $key NOT INSTALLED (expected sha256 $sha):"
      printf '    %s\n' "${reasons[@]}"
      [ ! -f "$target" ] || echo "    the file already at $target does not match either and was left as it is"
    } >&2
    failed+=("$key")
    continue
  fi
  chmod 0644 "$tmp"
  mv -f -- "$tmp" "$target"
  prov[$key]=$key$'\t'$sha$'\t'$source$'\t'$(now)
  case "$source" in
    mirror*) n_copied=$((n_copied + 1)); echo "copied      $key" ;;
    *) n_downloaded=$((n_downloaded + 1)); echo "downloaded  $key" ;;
  esac
done <<< "$list"

# Rewrite PROVENANCE atomically, one line per verified file, sorted.
ptmp=$(mktemp "$dest/.PROVENANCE.XXXXXX")
tmps+=("$ptmp")
{
  echo "# Written by $prog. One line per file, tab-separated: name/path, sha256, source, UTC date."
  echo "# Every file was checked against the sha256 in its manifest (models/<name>.toml) before it was installed."
  if [ ${#prov[@]} -gt 0 ]; then printf '%s\n' "${prov[@]}" | LC_ALL=C sort; fi
} > "$ptmp"
chmod 0644 "$ptmp"
mv -f -- "$ptmp" "$dest/PROVENANCE"

echo "$prog: $dest: $n_kept kept, $n_copied copied from the mirror, $n_downloaded downloaded, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
  echo "$prog: FAILED: ${failed[*]} (see the messages above)" >&2
  exit 1
fi
