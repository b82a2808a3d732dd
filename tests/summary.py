#!/usr/bin/env python3
"""Sums up a meson testlog.json: each Check binary's own summary line, then
one closing line "N passed, N failed, N skipped" over all tests."""
import json
import re
import sys

passed = failed = skipped = 0
checks = [0, 0, 0]
for line in open(sys.argv[1]):
    t = json.loads(line)
    res = t.get("result")
    if res in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif res == "SKIP":
        skipped += 1
    else:
        failed += 1
    m = re.search(r"Checks: (\d+), Failures: (\d+), Errors: (\d+)", t.get("stdout", "") or "")
    if m:
        for i in range(3):
            checks[i] += int(m.group(i + 1))
    if res == "SKIP":
        why = (t.get("stdout", "") or "").strip().splitlines()
        print(f"skipped: {t['name']}: {why[-1] if why else 'no reason given'}")
print(f"Checks: {checks[0]}, Failures: {checks[1]}, Errors: {checks[2]}")
print(f"{passed} passed, {failed} failed, {skipped} skipped")
