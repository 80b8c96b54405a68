"""Write a large synthetic run file, to measure how `kernelmark report` and `compare` scale.

The records are the published CPU run's, repeated with a distinct shape each (so every one is
its own case), and each timed record given SAMPLES fresh samples around its median (times
SCALE, to make a HEAD that is slower). 100,000 records of 1,000 samples is about 475 MB.

    python scripts/big_run.py OUT [--records 100000] [--samples 1000] [--scale 1.0] [--seed 0]
    /usr/bin/time -v kernelmark report OUT --format csv > /dev/null
    /usr/bin/time -v kernelmark compare BASE HEAD > /dev/null

Last measured (2026-12-01, the 2-core development VM shared with other engineers' test runs,
load average 1.3-1.9 throughout; user CPU time is the figure to read, and even it moved by
up to a third between runs of the same code: the ranges are of two or three runs each):
100,000 records of 1,000 samples, HEAD --scale 1.02 (39,395 timed pairs, all unchanged),
/usr/bin/time -f "%U user %e wall %M KB":

                          before (6922ad6)                       after (9cf0dc9)
    compare (table)        44.6-45.8 s user, 60 s wall, 422 MB     26.6-29.7 s user, 30-34 s wall, 382 MB
    compare --format json  49.4 s user, 68 s wall, 474 MB           26.9-27.0 s user, 31 s wall, 507 MB
    report --format csv    10.8-14.9 s user, 11-18 s wall, 173 MB   8.6-9.8 s user (one run 13.5), 9-10 s wall, 101 MB

Re-measured on a quiet machine (nothing else running, load 0.9-1.0) at 19befe7, 19:09 UTC,
twice each: compare 32.4 and 33.1 s user, 38.4 and 37.2 s wall, 382 MB; report --format csv
11.6 and 11.4 s user, 12.2 and 12.0 s wall, 101 MB. Slower than the loaded figures above:
this VM's speed drifts by a fifth over an hour (docs/model-step.md measured it), so compare
before and after only within one sitting.

Every output is byte for byte what it was at 6922ad6: the table, the 47 MB json (the same
ratios, intervals and p-values: the statistics are computed otherwise, exactly) and the csv.
What changed: the bootstrap interval from the ~120 draws a side that can hold the order
statistics numpy's quantile reads (kernelmark/reports/bootci.py), the rank test without a
loop over rows, no scipy.stats import; the samples checked and made an array by one numpy
conversion, a 1 MiB read buffer, the line checks without names (and per known layout) until
something is wrong; indented JSON through the C encoder (kernelmark/jsonindent.py); the csv
rows without StringIO round trips; the cyclic collector paused (kernelmark/gcpause.py).

What is left, per 10,000 records (the same loaded machine, so roughly): reading both files
1.3-1.6 s, of which orjson is 0.5 s (half of it building the 2,000 Python floats of each
timed pair), making those lists arrays 0.3 s, and the line checks 0.6 s; the statistics
0.55 s (sorting the samples and the rank test's merge, most of it); pairing and the rest
0.6 s; the table 0.3 s, the json 0.2 s; imports 1 s once. The issue's "seconds" is still
not reached: about 28 s of CPU for compare, 9 s for report csv. What it would take: not
building a Python float per sample (a parser that fills an array from the line's text at
C speed; numpy's own, np.fromstring, took 320 us a line here, slower than orjson and the
conversion together, and a check of the text's grammar in Python regex 170 us), and the
per-field checks of every line in C.
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
