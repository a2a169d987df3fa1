#!/usr/bin/env bash
# On the GPU machine (no network), from the repository root:
#     bash integration/engines/install.sh NAME [DIR]
# NAME is <engine>-<version> (e.g. vllm-0.26.0); DIR holds its parts, SHA256SUMS and manifest.json as
# built by integration/engines/build_parts.py (default .engines/NAME, or e.g. /tmp/parts/NAME when the parts
# arrived over several calls). It checks the parts, unpacks them to $ENGINES_ROOT/NAME/site (default
# /tmp/engines), writes $ENGINES_ROOT/NAME/env.sh and installs this checkout's plugin into the same site
# as a wheel. A second run with the same parts skips the unpack (and needs only SHA256SUMS, or nothing,
# in DIR); the plugin is reinstalled every time, so the site always has the checkout's code.
# Any failure prints one line saying what is wrong and exits non-zero.
set -euo pipefail
fail() { echo "install.sh: $*" >&2; exit 1; }
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: bash integration/engines/install.sh NAME [DIR]" >&2; exit 2; }
NAME=$1
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR=${2:-$REPO/.engines/$NAME}
case "$NAME" in
  sglang-*) GROUP=sglang.srt.plugins; DIST=sglang ;;
  vllm-*) GROUP=vllm.general_plugins; DIST=vllm ;;
  *) fail "unknown engine in '$NAME'; accepted: sglang-<version>, vllm-<version>" ;;
esac
ENGINE="${ENGINES_ROOT:-/tmp/engines}/$NAME"
SITE="$ENGINE/site"
mkdir -p "$ENGINE"

unpack() {
  [ -f "$DIR/manifest.json" ] || fail "no manifest.json in $DIR: carry it with the parts"
  local built missing=() parts=() sum file
  built=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["name"])' "$DIR/manifest.json") \
    || fail "$DIR/manifest.json is not a build_parts.py manifest"
  [ "$built" = "$NAME" ] || fail "the parts in $DIR are $built, not $NAME"
  while read -r sum file; do
    parts+=("$file"); [ -f "$DIR/$file" ] || missing+=("$file")
  done < "$DIR/SHA256SUMS"
  [ ${#missing[@]} -eq 0 ] || fail "$DIR lacks ${missing[*]} ($(( ${#parts[@]} - ${#missing[@]} )) of ${#parts[@]} parts here): carry the rest into $DIR first"
  local bad
  bad=$(cd "$DIR" && sha256sum -c SHA256SUMS 2>/dev/null | sed -n 's/: FAILED.*//p' | tr '\n' ' ' || true)
  [ -z "$bad" ] || fail "${bad% }: checksum mismatch in $DIR (damaged in transfer): carry or build it again"
  rm -rf "$SITE.partial" && mkdir -p "$SITE.partial"
  (cd "$DIR" && cat "${parts[@]}") | xz -dc -T0 2> "$ENGINE/unpack.log" | tar -x -C "$SITE.partial" 2>> "$ENGINE/unpack.log" \
    || fail "unpacking $NAME into $SITE.partial failed: $(head -1 "$ENGINE/unpack.log")"
  rm -rf "$SITE" && mv "$SITE.partial" "$SITE"
}

if [ -f "$DIR/SHA256SUMS" ]; then
  stamp=$(sha256sum < "$DIR/SHA256SUMS" | cut -d' ' -f1)
  if [ -d "$SITE" ] && [ "$(cat "$ENGINE/unpacked" 2>/dev/null)" = "$stamp" ]; then
    echo "$NAME: parts already unpacked in $SITE"
  else
    unpack
    echo "$stamp" > "$ENGINE/unpacked"
  fi
elif [ -d "$SITE" ] && [ -f "$ENGINE/unpacked" ]; then
  echo "$NAME: no parts in $DIR; keeping the site unpacked earlier in $SITE"
else
  fail "no SHA256SUMS in $DIR: expected the parts of $NAME built by integration/engines/build_parts.py"
fi
cp "$REPO/integration/engines/env.sh" "$ENGINE/env.sh"

# The plugin, as a wheel built from a clean copy of the checkout: an in-tree build would reuse a stale
# build/ folder (kept between calls there) and could ship modules deleted since.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/LICENSE" "$REPO/attn_sched_plugin" "$src/"
log="$ENGINE/plugin-install.log"
env -u PYTHONPATH python3 -m pip wheel --no-deps --no-build-isolation --no-index -w "$src/dist" "$src" > "$log" 2>&1 \
  || fail "building the plugin wheel failed (python3 needs pip and setuptools>=77); see $log"
env -u PYTHONPATH python3 -m pip install --no-deps --no-index --upgrade --target "$SITE" "$src"/dist/*.whl >> "$log" 2>&1 \
  || fail "installing the plugin wheel into $SITE failed; see $log"
PYTHONPATH="$SITE" python3 - "$GROUP" "$DIST" "${NAME#*-}" <<'EOF' || exit 1
import importlib.metadata as md, re, sys
group, dist, version = sys.argv[1:]
try:
    found = md.version(dist)
except md.PackageNotFoundError:
    found = None
hooked = [ep.value for ep in md.entry_points(group=group) if ep.name == "attn_sched"]
if found != version or not hooked:
    sys.exit(f"install.sh: the site has {dist} {found} (want {version}) and attn_sched in {group}: {hooked or 'missing'}")
# installed with --no-deps: the plugin's own requirements must come from the machine
absent = []
for need in (r.split(";")[0].strip() for r in md.requires("attn-sched-plugin") if "extra ==" not in r):
    try:
        md.version(re.split(r"[\s<>=!~\[(]", need)[0])
    except md.PackageNotFoundError:
        absent.append(need)
if absent:
    sys.exit(f"install.sh: the plugin needs {', '.join(absent)}, which this python3 lacks; carry a wheel of it")
print(f"ready: {dist} {found} + attn-sched-plugin {md.version('attn-sched-plugin')} ({hooked[0]})")
EOF
echo "$NAME: source $ENGINE/env.sh"
