"""Write a large synthetic run file, to measure how `kernelmark report` and `compare` scale.

The records are the published CPU run's, repeated with a distinct shape each (so every one is
its own case), and each timed record given SAMPLES fresh samples around its median (times
SCALE, to make a HEAD that is slower). 100,000 records of 1,000 samples is about 475 MB.

    python scripts/big_run.py OUT [--records 100000] [--samples 1000] [--scale 1.0] [--seed 0]
    /usr/bin/time -v kernelmark report OUT --format csv > /dev/null
    /usr/bin/time -v kernelmark compare BASE HEAD > /dev/null

Last measured 2026-12-01, 21:12-21:15 UTC, on the 2-core development VM with nothing else
running (load average 0.8-1.8: the measuring processes themselves), 100,000 records of
1,000 samples, BASE --scale 1.0 and HEAD --scale 1.02 (39,395 timed pairs), three runs each,
/usr/bin/time -f "%U user %S sys %e wall %M KB" (user and system time include the
reader processes; memory is the largest process's):

                          before (0157795), one run            now (f90f197)
    compare (table)        32.5 s user, 4.0 sys, 36.3 s wall     23.2-26.4 s user, 1.7-2.0 sys, 16.4-18.6 s wall
                           382 MB                                398-402 MB (each reader process about 35 MB)
    compare --format json  -                                     28.8 s user, 21.0 s wall, 526 MB
    report --format csv    10.6 s user, 11.0 s wall, 101 MB      9.4-10.8 s user, 5.8-7.2 s wall, 102 MB

Every output is byte for byte the old one. What changed, in the order it was done:
- a record of a layout checked before has only its values compared (kernelmark/layoutcheck.py);
- with pysimdjson, each timed record's samples are read straight into a float64 array and
  the rest of its line by orjson (kernelmark/samplecut.py): 43 ns a sample, where orjson's
  Python float and numpy's conversion of the list took 100-140;
- compare asks glibc to keep freed memory for the next batch of statistics (kernelmark/heap.py:
  734,000 page faults and 3.6 s of system time became 106,000 and 1.0 s), and sorts the
  batch in place, its medians read off the sorted rows;
- each file of 16 MB or more is read by a second process, which sends the checked records
  in batches, their samples as one run of doubles (kernelmark/prefetch.py).
This VM's speed drifts by up to a fifth within an hour: compare figures within one sitting.

What is left, from a sampling profile (py-spy) of compare: the main process spends 13 s of
CPU on what is not reading -- the statistics (4 to 5 s: the merge of each pair's sorted
samples for the rank test, the sorts), pairing the records and their keys (3 s), the
100,000-row table (3 s), unpickling what the readers send (2 s) -- and the two readers 6 s
each, so on two CPUs the three processes share them; with more CPUs compare is bound by the
main process (about 14 s here). The floor of reading is simdjson's 43 ns a sample: 3.4 s
for the 80 million samples of both files.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1] / "published" / "cpu-amd-epyc" / "20261124T215946_default.jsonl"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    lines = [json.loads(line) for line in TEMPLATE.read_text().splitlines()]
    header, recs = lines[0], [x for x in lines[1:] if x.get("type") == "record"]
    rng = random.Random(a.seed)
    with open(a.out, "w") as f:
        f.write(json.dumps(header) + "\n")
        for i in range(a.records):
            r = json.loads(json.dumps(recs[i % len(recs)]))
            r["shape"] = {**r["shape"], "i": i}
            r["case_index"] = i
            if r["status"] == "ok":
                t, n = r["timing"], a.samples
                s = [round(t["median_us"] * a.scale * (1 + rng.gauss(0, 0.01)), 4) for _ in range(n)]
                ss = sorted(s)
                t.update(n=n, samples_us=s, median_us=ss[n // 2], min_us=ss[0], max_us=ss[-1], mean_us=sum(s) / n,
                         ci_low_us=ss[max(n // 2 - n // 32, 0)], ci_high_us=ss[min(n // 2 + n // 32, n - 1)])
                t["ci_rel"] = max(t["median_us"] - t["ci_low_us"], t["ci_high_us"] - t["median_us"]) / t["median_us"]
            f.write(json.dumps(r) + "\n")
        f.write(json.dumps({"type": "footer", "records": a.records, "finished": header["started"]}) + "\n")


if __name__ == "__main__":
    main()
