"""Samples the resident memory of processes every 100 ms until a stop file appears.

    python3 bench/rss_sampler.py OUT STOP PID...

Writes one line per sample to OUT: the VmRSS in KiB of each PID, space-separated, in
the order given (0 for a process that has exited). Used by bench/memory.sh and
bench/ab.sh.
"""
import os
import sys
import time


def rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def main():
    out, stop, pids = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(out, "w") as f:
        while not os.path.exists(stop):
            f.write(" ".join(str(rss(p)) for p in pids) + "\n")
            f.flush()
            time.sleep(0.1)


if __name__ == "__main__":
    main()
