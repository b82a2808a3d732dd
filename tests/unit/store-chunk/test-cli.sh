#!/bin/sh
# `ckpt bench store` on a small size keeps its store; `ckpt store` then
# lists, checks, deletes and collects it, and names a damaged pack.
set -u
CKPT=$1
T=$(mktemp -d /tmp/ckptfs-test-store-cli-XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$CKPT" bench store --size 2M --threads 2 --dir "$T" --keep >"$T/bench.out" 2>&1 ||
	{ cat "$T/bench.out"; fail "bench store"; }
grep -q "ingest, same data again .* 0 B new" "$T/bench.out" || { cat "$T/bench.out"; fail "re-ingest wrote bytes"; }
S=$(sed -n 's/^store kept in //p' "$T/bench.out")
[ -d "$S/packs" ] || fail "no store kept ($S)"

"$CKPT" store --store "$S" ls >"$T/ls" || fail "ls"
for n in first again changed; do grep -q "^$n " "$T/ls" || { cat "$T/ls"; fail "ls lacks $n"; }; done
"$CKPT" store --store "$S" fsck >"$T/fsck" || { cat "$T/fsck"; fail "fsck of a good store"; }
grep -q ": clean$" "$T/fsck" || fail "fsck does not say clean"
"$CKPT" store --store "$S" stats | grep -q "^snapshots: *3$" || fail "stats"
"$CKPT" store rm --help | grep -q "Usage: ckpt store" || fail "rm --help"
"$CKPT" store --store "$S" gc extra >/dev/null 2>&1 && fail "gc took an argument"
"$CKPT" store --store "$S" rm nosuch >/dev/null 2>&1 && fail "rm of a missing snapshot succeeded"
"$CKPT" store --store "$S" rm first again >/dev/null || fail "rm"
"$CKPT" store --store "$S" gc >"$T/gc" || fail "gc"
grep -q "chunks freed:" "$T/gc" || fail "gc output"
"$CKPT" store --store "$S" ls | grep -q "^first " && fail "first still listed"
"$CKPT" store --store "$S" fsck >/dev/null || fail "fsck after gc"

# One byte flipped inside the first record's payload of every pack.
for p in "$S"/packs/*.pack; do
	printf '\377' | dd of="$p" bs=1 seek=200 conv=notrunc status=none || fail "dd"
done
"$CKPT" store --store "$S" fsck >"$T/fsck2" && fail "fsck missed a flipped byte"
grep -q "\.pack offset .*checksum mismatch" "$T/fsck2" || { cat "$T/fsck2"; fail "fsck does not name the pack"; }
echo "ok"
