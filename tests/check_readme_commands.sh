#!/bin/sh
# The README's two commands and .ci/run must stay in step: every command line
# in the README's "Build and test" block appears verbatim in .ci/run.
set -eu
root=$1
commands=$(sed -n '/^## Build and test/,/^## /p' "$root/README.md" |
           sed -n '/^```sh/,/^```/p' | grep -v -e '^```' -e '^#')
[ -n "$commands" ] || { echo "no commands found in README.md"; exit 1; }
echo "$commands" | while IFS= read -r line; do
  grep -qxF "$line" "$root/.ci/run" || { echo "not in .ci/run: $line"; exit 1; }
done
echo "README commands and .ci/run agree"
