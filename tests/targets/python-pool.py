# A Python 3 multiprocessing pool: the parent with its pool's threads,
# three worker processes, the pipes and shared-memory semaphores between
# them. The pool works before the checkpoint; after the restore the same
# pool (same worker pids) must do more work, correctly, and close cleanly.
import multiprocessing as mp
import os
import sys
import time

ready, result = sys.argv[1], sys.argv[2]


def verdict(ok, why=""):
    with open(result + ".tmp", "w") as f:
        f.write("PASS\n" if ok else "FAIL: " + why + "\n")
    os.rename(result + ".tmp", result)
    sys.exit(0 if ok else 1)


def work(x):
    return (os.getpid(), x * x)


if __name__ == "__main__":
    mp.set_start_method("fork")
    pool = mp.Pool(3)
    before = pool.map(work, range(30), chunksize=1)
    if [v for _, v in before] != [x * x for x in range(30)]:
        verdict(False, "wrong results before the checkpoint")
    workers = sorted(p.pid for p in mp.active_children())
    with open(ready + ".tmp", "w") as f:
        f.write("ready\n")
    os.rename(ready + ".tmp", ready)
    while not os.path.exists(ready + ".restored"):
        time.sleep(0.002)
    after = pool.map(work, range(300), chunksize=1)
    if [v for _, v in after] != [x * x for x in range(300)]:
        verdict(False, "wrong results after the restore")
    used = {p for p, _ in after}
    if not used <= set(workers):
        verdict(False, "work done by %s, not the pool's workers %s" % (used, workers))
    if sorted(p.pid for p in mp.active_children()) != workers:
        verdict(False, "the workers changed: %s" % sorted(p.pid for p in mp.active_children()))
    pool.close()
    pool.join()
    verdict(True)
