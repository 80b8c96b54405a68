"""Write a large synthetic run file, to measure how `kernelmark report` and `compare` scale.

The records are the published CPU run's, repeated with a distinct shape each (so every one is
its own case), and each timed record given SAMPLES fresh samples around its median (times
SCALE, to make a HEAD that is slower). 100,000 records of 1,000 samples is about 475 MB.

    python scripts/big_run.py OUT [--records 100000] [--samples 1000] [--scale 1.0] [--seed 0]
    /usr/bin/time -v kernelmark report OUT --format csv > /dev/null
    /usr/bin/time -v kernelmark compare BASE HEAD > /dev/null

Last measured (2026-12-01, the 2-core development VM shared with other engineers' test runs,
load average 2-7 throughout, so user CPU time is the figure to read; wall time was 1-6x it
and says more about the load than about kernelmark): 100,000 records of 1,000 samples, HEAD
--scale 1.02 (39,395 timed pairs, all unchanged), /usr/bin/time -f "%U user %e wall %M KB":

                          before (93b055a)                        after (this branch, orjson installed)
    compare (table)        99.2 s user, 315 s wall, 545 MB (load 4.6-6.8)   45.7 s user, 100 s wall, 422 MB (load 3.1-3.4)
    compare --format json 100.5 s user, 177 s wall, 422 MB (load 6.8-2.5)   46.5 s user,  94 s wall, 474 MB (load 3.1)
    report --format csv    26.9 s user,  28 s wall, 173 MB (load 2.5-1.9)   14.6 s user,  20 s wall, 173 MB (load 2.6-2.8)

The same verdicts (39,395 unchanged) and geometric mean before and after; the intervals'
ends moved by 6e-5 on average (at most 3e-4), the bootstrap's Monte Carlo error (the draws
are now shared by the pairs of one sample count); the csv is byte for byte the same.

What is left, per 10,000 records (timed on the same loaded machine, so roughly): reading
both files 2 s (orjson 0.9 s, the checks 0.6 s: Python builds 2,000 floats per timed
pair, which nothing here avoids), the statistics about 1 s (the quantile's partition of
4,000 ratios a pair, the rank test, sorts and gathers), the table 0.3 s, the json 0.6 s
(Python's indenting encoder; one that writes each scalar with the C encoder was slower),
imports 1.5 s once (scipy.stats). The issue's "seconds" is not reached: 45 s of CPU.
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
