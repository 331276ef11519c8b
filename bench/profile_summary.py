"""Summarize py-spy raw (collapsed) stacks from `bench/run.py --profile`.

    python bench/profile_summary.py bench/results/profile-fifoflow-....txt [--top 25] [--match TEXT]

Prints, per thread and overall, the share of on-CPU samples whose innermost frame is a
given function ("self") and whose stack contains it anywhere ("inclusive"). With
``--match``, only stacks containing TEXT are counted (e.g. ``_slot_loop``).
"""

from __future__ import annotations

import argparse
import collections
import re

FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^():]*?)(?::\d+)?\)$")


def frames(stack: str) -> list[str]:
    out = []
    for f in stack.split(";"):
        m = FRAME.match(f.strip())
        if m:
            file = m.group("file").split("site-packages/")[-1].split("/lib/python3")[-1]
            out.append(f"{m.group('fn')} ({file})")
        else:
            out.append(f.strip())
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="+")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--match", default=None)
    args = p.parse_args()
    self_c: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for path in args.files:
        with open(path) as fh:
            lines = fh.read().splitlines()
        for line in lines:
            stack, _, count = line.rpartition(" ")
            if not count.isdigit() or (args.match and args.match not in stack):
                continue
            n = int(count)
            fs = frames(stack)
            thread = fs[0].split(":")[-1].strip() if fs else "?"
            fs = fs[1:]  # the thread label
            if any("_find_and_load" in f or "<module>" in f for f in fs[:3]):
                continue  # imports at start-up
            total += n
            threads[thread] += n
            if fs:
                self_c[fs[-1]] += n
            for f in set(fs):
                incl[f] += n
    print(f"{total} samples")
    print("\nby thread:")
    for t, n in threads.most_common():
        print(f"  {n / total:6.1%}  {t}")
    print("\nself (innermost frame):")
    for f, n in self_c.most_common(args.top):
        print(f"  {n / total:6.1%}  {f}")
    print("\ninclusive:")
    for f, n in incl.most_common(args.top):
        print(f"  {n / total:6.1%}  {f}")


if __name__ == "__main__":
    main()
