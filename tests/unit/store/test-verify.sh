#!/bin/sh
# `ckpt verify` against a snapshot directory written from scratch by a
# short python3 program that follows docs/FORMAT.md and nothing else: the
# format description is enough to write a snapshot the store accepts,
# and every kind of damage is named.
set -u
CKPT=$1
command -v python3 >/dev/null || { echo "skipped: python3 is not installed"; exit 77; }
T=$(mktemp -d /tmp/ckptfs-test-verify-XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

python3 - "$T/snap" <<'PY' || fail "python writer"
import hashlib, os, sys, time
root = sys.argv[1]
files = {
    "process": b"pid 42\ncomm demo\n",
    "memory/0000000000400000-0000000000408000": b"\x00" * 4096 + b"\x90" * 4096,
    "regs/42": b"rip 0x401000\n",
    "empty": b"",
    "big": bytes(range(256)) * 200,  # 51200 bytes: three full blocks and a short one
}
def tree_hash(data):
    leaves = b"".join(hashlib.sha256(data[i:i + 16384]).digest()
                      for i in range(0, len(data), 16384))
    return hashlib.sha256(leaves).hexdigest()
lines = ["ckptfs-snapshot 1", "hash sha256-tree", "created %d" % time.time(),
         "files %d" % len(files)]
for path in sorted(files, key=lambda p: p.encode()):
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    open(full, "wb").write(files[path])
    lines.append("%s %d %s" % (tree_hash(files[path]), len(files[path]), path))
open(os.path.join(root, "manifest"), "w").write("\n".join(lines) + "\n")
PY

out=$("$CKPT" verify "$T/snap") || fail "a good snapshot refused: $out"
echo "$out" | grep -q '^OK .*: 6 files' || fail "unexpected output: $out"

expect_bad() { # what to do, words the message must hold
	rm -rf "$T/bad" && cp -a "$T/snap" "$T/bad" && (cd "$T/bad" && sh -c "$1") || fail "setup: $1"
	msg=$("$CKPT" verify "$T/bad" 2>&1) && fail "'$1' accepted"
	echo "$msg" | grep -qF "$2" || fail "'$1': message '$msg' lacks '$2'"
	echo "refused as it should: $msg"
}
expect_bad "printf x >> regs/42" "'regs/42': size 14, manifest says 13"
expect_bad "printf Z | dd of=big bs=1 seek=20000 conv=notrunc status=none" "'big': content does not match"
expect_bad "rm process" "'process': missing"
expect_bad "echo hi > notes" "'notes': not in the manifest"
expect_bad "rm regs/42 && ln -s /etc/passwd regs/42" "'regs/42': a symlink"
expect_bad "sed -i 's/^ckptfs-snapshot 1/ckptfs-snapshot 3/' manifest" "format version 3 not supported"

# --quick checks sizes only: the flipped byte passes, the size does not
rm -rf "$T/bad" && cp -a "$T/snap" "$T/bad"
printf Z | dd of="$T/bad/big" bs=1 seek=20000 conv=notrunc status=none
"$CKPT" verify --quick "$T/bad" >/dev/null || fail "--quick looked at content"
"$CKPT" verify "$T/nonexistent" 2>/dev/null && fail "a missing directory accepted"
"$CKPT" verify >/dev/null 2>&1; [ $? -eq 2 ] || fail "no usage error without DIR"
echo "all good"
