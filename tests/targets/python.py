# A Python 3 interpreter with some state: a dict, a list, a generator in
# the middle of its run, a closure. Waits for READY.restored, then checks.
import hashlib
import os
import sys
import time

ready, result = sys.argv[1], sys.argv[2]


def verdict(ok, why=""):
    with open(result + ".tmp", "w") as f:
        f.write("PASS\n" if ok else "FAIL: " + why + "\n")
    os.rename(result + ".tmp", result)
    sys.exit(0 if ok else 1)


def counter():
    n = 0
    while True:
        n += 1
        yield n


table = {str(i): i * i for i in range(50000)}
data = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20000)]
digest = hashlib.sha256("".join(data).encode()).hexdigest()
gen = counter()
for _ in range(1000):
    next(gen)
with open(ready + ".tmp", "w") as f:
    f.write("ready\n")
os.rename(ready + ".tmp", ready)
while not os.path.exists(ready + ".restored"):
    time.sleep(0.002)
if next(gen) != 1001:
    verdict(False, "generator lost its place")
if sum(table.values()) != sum(i * i for i in range(50000)):
    verdict(False, "dict changed")
if hashlib.sha256("".join(data).encode()).hexdigest() != digest:
    verdict(False, "list changed")
verdict(True)
