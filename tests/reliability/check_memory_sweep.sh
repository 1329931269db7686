#!/bin/sh
# The address-space sweep of issue 10: memory_probe under `ulimit -v` from
# 32 MiB upward, in 2 MiB steps to 96 MiB (this model's calls start
# to succeed), then 32 MiB steps to 512 MiB. Every step must exit 0 (a
# status, never a signal) and print nothing on stderr, and the largest limit
# must let every call succeed, so that the sweep crossed each allocation on
# its way. A limit too small for the dynamic loader to map the libraries at
# all (exit 127 before main) says nothing about libmi and is only listed.
# Usage: check_memory_sweep.sh PROBE MODEL
probe=$1 model=$2
tmp=${TMPDIR:-/tmp}/mi_memory_sweep.$$
mkdir -p "$tmp" || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0 mb=32 last=
while [ $mb -le 512 ]; do
  ( ulimit -v $((mb * 1024)) && exec "$probe" "$model" ) >"$tmp/out" 2>"$tmp/err"
  rc=$?
  statuses=$(tr '\n' ' ' <"$tmp/out")
  if [ $rc -eq 127 ] && grep -q "error while loading shared libraries" "$tmp/err"; then
    echo "ulimit -v ${mb} MiB: the libraries do not fit; the program cannot start"
  elif [ $rc -ne 0 ]; then
    echo "FAIL: ulimit -v ${mb} MiB: exit status $rc (a signal when > 128): $statuses"
    fail=1
  elif [ -s "$tmp/err" ]; then
    echo "FAIL: ulimit -v ${mb} MiB: stderr: $(head -c 300 "$tmp/err")"
    fail=1
  else
    echo "ulimit -v ${mb} MiB: $statuses"
  fi
  last=$statuses
  if [ $mb -lt 96 ]; then mb=$((mb + 2)); else mb=$((mb + 32)); fi
done
case "$last" in
  *" -"*|-*) echo "FAIL: even 512 MiB did not let every call succeed: $last"; fail=1 ;;
esac
exit $fail
