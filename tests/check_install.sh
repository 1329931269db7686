#!/bin/sh
# Installs the current build into a fresh prefix and builds the out-of-tree
# consumer (tests/consumer) against it four ways, running each and checking
# its output:
#   cmake-shared   find_package(mi) + mi::mi
#   cmake-static   find_package(mi) + mi::mi_static
#   pc-shared      pkg-config --cflags --libs mi
#   pc-static      pkg-config --static, from a second install without
#                  libmi.so (so -lmi can only be libmi.a), forcing in every
#                  public function (-Wl,-u) so that every object of libmi.a
#                  must resolve with mi.pc's Libs.private alone.
# Usage: check_install.sh BUILD_DIR SOURCE_DIR WORK_DIR CMAKE CC LIBDIR VERSION "FLAGS"
# FLAGS go to every compile and link (the sanitizer flags of an MI_SANITIZE
# build: an instrumented libmi needs an instrumented program).
set -eu
build="$1" src="$2" work="$3" cmake="$4" cc="$5" libdir="$6" version="$7" flags="$8"
warnings="-std=c11 -Wall -Wextra -Wpedantic -Werror"

fail() { echo "FAIL: $*"; exit 1; }
rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"
"$cmake" --install "$build" --prefix "$prefix" > "$work/install.log" ||
  fail "cmake --install (see $work/install.log)"
for f in include/mi.h "$libdir/libmi.a" "$libdir/libmi.so" "$libdir/libmi.so.0" \
         "$libdir/libmi.so.$version" "$libdir/pkgconfig/mi.pc" \
         "$libdir/cmake/mi/miConfig.cmake" "$libdir/cmake/mi/miConfigVersion.cmake" \
         "$libdir/cmake/mi/miTargets.cmake"; do
  [ -e "$prefix/$f" ] || fail "the install lacks $f"
done

cat > "$work/expected" <<EXPECTED
libmi $version (header $version)
n_layers=2 n_heads=4 n_kv_heads=2 d_model=16 d_head=4 d_vocab=10 n_ctx=8
W_E[9][15]=19.875 processing=1
EXPECTED

# run NAME LINKAGE [ENV...] BINARY: runs it, compares its output, and checks
# which libmi it loaded (the installed one) or that it has none (static).
run() {
  name="$1" linkage="$2"
  shift 2
  env "$@" > "$work/$name.out" 2> "$work/$name.err" ||
    fail "$name exited with $? ($(cat "$work/$name.err"))"
  diff -u "$work/expected" "$work/$name.out" || fail "$name printed something else"
  bin="$(eval echo "\${$#}")"
  needed="$(readelf -d "$bin" | grep 'NEEDED.*libmi\.' || true)"
  if [ "$linkage" = static ]; then
    [ -z "$needed" ] || fail "$name should not need libmi.so: $needed"
  else
    loaded="$(env LD_TRACE_LOADED_OBJECTS=1 "$@" | grep "libmi\.so")"
    case "$loaded" in
      *"$prefix/"*) ;;
      *) fail "$name loaded another libmi: $loaded" ;;
    esac
  fi
  echo "ok: $name"
}

for linkage in shared static; do
  dir="$work/cmake-$linkage"
  static=OFF
  [ "$linkage" = static ] && static=ON
  "$cmake" -S "$src/tests/consumer" -B "$dir" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
    -DMI_CONSUMER_STATIC=$static > "$dir.log" 2>&1 || fail "cmake-$linkage: configure (see $dir.log)"
  grep -q "^mi_DIR:PATH=$prefix/$libdir/cmake/mi\$" "$dir/CMakeCache.txt" ||
    fail "cmake-$linkage found mi elsewhere: $(grep '^mi_DIR' "$dir/CMakeCache.txt")"
  "$cmake" --build "$dir" >> "$dir.log" 2>&1 || fail "cmake-$linkage: build (see $dir.log)"
  run "cmake-$linkage" "$linkage" "$dir/consumer"
done

pc_version="$(PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig" pkg-config --modversion mi)" ||
  fail "pkg-config does not find mi"
[ "$pc_version" = "$version" ] || fail "pkg-config says mi $pc_version, expected $version"
# shellcheck disable=SC2046 # pkg-config's output is a list of words
PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig" sh -c "$cc $flags $warnings \
  \$(pkg-config --cflags mi) '$src/tests/consumer/consumer.c' -o '$work/pc-shared' \
  \$(pkg-config --libs mi)" > "$work/pc-shared.log" 2>&1 ||
  fail "pc-shared: build ($(cat "$work/pc-shared.log"))"
run pc-shared shared LD_LIBRARY_PATH="$prefix/$libdir" "$work/pc-shared"

static_prefix="$work/static-prefix"
"$cmake" --install "$build" --prefix "$static_prefix" > "$work/install-static.log" ||
  fail "cmake --install (see $work/install-static.log)"
rm -f "$static_prefix/$libdir"/libmi.so*
undefined="$(nm -g --defined-only "$static_prefix/$libdir/libmi.a" |
             awk '$2 == "T" && $3 ~ /^mi_[a-z0-9]/ { printf " -Wl,-u,%s", $3 }')"
[ -n "$undefined" ] || fail "libmi.a defines no mi_ function"
PKG_CONFIG_PATH="$static_prefix/$libdir/pkgconfig" sh -c "$cc $flags $warnings \
  \$(pkg-config --cflags --static mi) '$src/tests/consumer/consumer.c' -o '$work/pc-static' \
  $undefined \$(pkg-config --libs --static mi)" > "$work/pc-static.log" 2>&1 ||
  fail "pc-static: build ($(cat "$work/pc-static.log"))"
run pc-static static "$work/pc-static"
