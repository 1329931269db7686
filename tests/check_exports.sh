#!/bin/sh
# Checks the shared library's ABI surface:
# - its soname is libmi.so.<major> (libmi.so.0 for 0.x);
# - every dynamic symbol it defines is a public mi_ name (not an internal
#   mi__ one) declared with MI_API in mi.h, and every MI_API function in
#   mi.h is defined, so the header and the library agree.
# No symbol is exempt: with the version script (local: *) GNU ld and gold
# add none of their own (_init, _fini, _edata, __bss_start stay local).
# Usage: check_exports.sh LIBRARY MI_H SONAME
set -eu
lib="$1" header="$2" soname="$3"
status=0

actual_soname="$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')"
if [ "$actual_soname" != "$soname" ]; then
  echo "FAIL: soname of $lib is '$actual_soname', expected '$soname'"
  status=1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
nm -D --defined-only "$lib" | awk '{ print $NF }' | sort -u > "$tmp/exported"
# Declarations start a line with MI_API; the name is the identifier before '('.
grep '^MI_API ' "$header" | sed 's/(.*//; s/.*[^A-Za-z0-9_]//' | sort -u > "$tmp/declared"

if [ ! -s "$tmp/exported" ] || [ ! -s "$tmp/declared" ]; then
  echo "FAIL: no exported symbols in $lib or no MI_API declarations in $header"
  exit 1
fi
bad="$(grep -v '^mi_[a-z0-9]' "$tmp/exported" || true)"
if [ -n "$bad" ]; then
  echo "FAIL: $lib exports symbols without the mi_ prefix (or internal mi__ ones):"
  echo "$bad"
  status=1
fi
extra="$(comm -23 "$tmp/exported" "$tmp/declared")"
if [ -n "$extra" ]; then
  echo "FAIL: $lib exports symbols mi.h does not declare with MI_API:"
  echo "$extra"
  status=1
fi
missing="$(comm -13 "$tmp/exported" "$tmp/declared")"
if [ -n "$missing" ]; then
  echo "FAIL: mi.h declares functions $lib does not export:"
  echo "$missing"
  status=1
fi
[ "$status" -eq 0 ] && echo "ok: soname $actual_soname, $(wc -l < "$tmp/exported") mi_ symbols, all declared in mi.h"
exit "$status"
