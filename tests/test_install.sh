#!/bin/sh
# test_install.sh BUILD_DIR - `cmake --install` into a temporary prefix puts sd, libsd, sd.h and sd.pc
# there, and a small program built with `pkg-config --cflags --libs sd` links against it and runs.
set -eu
build=$1
prefix=$(mktemp -d /tmp/sd-test-install-XXXXXX)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in bin/sd include/sd.h; do
  [ -e "$prefix/$f" ] || { echo "not installed: $f"; exit 1; }
done
pc=$(find "$prefix" -name sd.pc)
lib=$(find "$prefix" -name 'libsd.so*' | head -n 1)
[ -n "$pc" ] && [ -n "$lib" ] || { echo "not installed: sd.pc or libsd.so"; exit 1; }
cat > "$prefix/hello.c" <<'C'
#include <sd.h>
#include <stdio.h>
int main(void) {
    sd_gen_params p;
    sd_gen_params_default(&p);
    printf("%s %d %s\n", sd_version(), p.steps, sd_sampler_name(p.sampler));
    return 0;
}
C
export PKG_CONFIG_PATH="$(dirname "$pc")"
cc "$prefix/hello.c" -o "$prefix/hello" $(pkg-config --cflags --libs sd)
got=$(LD_LIBRARY_PATH="$(dirname "$lib")" "$prefix/hello")
v() { sed -n "s/#define SD_VERSION_$1 \\([0-9]*\\).*/\\1/p" "$prefix/include/sd.h"; }
want="$(v MAJOR).$(v MINOR).$(v PATCH) 20 lms"
[ "$got" = "$want" ] || { echo "hello printed '$got', want '$want'"; exit 1; }
"$prefix/bin/sd" --help | grep -q "usage: sd" || { echo "installed sd --help failed"; exit 1; }
echo "1 passed, 0 failed"
