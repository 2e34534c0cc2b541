#!/usr/bin/env bash
# The reference rate of argon2id at keyledger's parameters (m=19456 KiB, t=2, p=1, 32-byte
# hash), from the reference implementation's CLI (Debian's `argon2` package): one loop per
# core, each hashing back to back for DURATION seconds; prints hashes/s in total and per core.
# Each hash is one process start (~1-2 ms of the ~50 ms a hash takes), so the rate is a slight
# underestimate of the library's. Compare with keyledger's own rate (docs/PERFORMANCE.md).
#
# Usage: bench/argon2-reference.sh [DURATION_SECONDS] [LOOPS]   (defaults: 10, nproc)
set -euo pipefail

duration="${1:-10}"
loops="${2:-$(nproc)}"

if ! command -v argon2 >/dev/null 2>&1; then
    echo "argon2 CLI not found: apt-get install -y argon2" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# One loop: hash until the deadline, then write how many it did.
one_loop() {
    local id="$1" deadline="$2" n=0
    while (( $(date +%s%N) < deadline )); do
        printf 'correct horse battery staple %s' "$n" \
            | argon2 "keyledger-salt-$id" -id -t 2 -k 19456 -p 1 -l 32 -r >/dev/null
        n=$((n + 1))
    done
    echo "$n" >"$work/$id"
}

start=$(date +%s%N)
deadline=$((start + duration * 1000000000))
for i in $(seq 1 "$loops"); do
    one_loop "$i" "$deadline" &
done
wait
end=$(date +%s%N)

total=0
for i in $(seq 1 "$loops"); do
    total=$((total + $(cat "$work/$i")))
done
awk -v n="$total" -v ns="$((end - start))" -v loops="$loops" 'BEGIN {
    s = ns / 1e9
    printf "argon2 CLI (reference), argon2id m=19456 KiB t=2 p=1: %d hashes in %.2f s on %d loops = %.1f hashes/s (%.1f per loop, %.1f ms each)\n",
        n, s, loops, n / s, n / s / loops, 1000 * s * loops / n
}'
