"""Write a large synthetic run file, to measure how `kernelmark report` and `compare` scale.

The records are the published CPU run's, repeated with a distinct shape each (so every one is
its own case), and each timed record given SAMPLES fresh samples around its median (times
SCALE, to make a HEAD that is slower). 100,000 records of 1,000 samples is about 475 MB.

    python scripts/big_run.py OUT [--records 100000] [--samples 1000] [--scale 1.0] [--seed 0]
    /usr/bin/time -v kernelmark report OUT --format csv > /dev/null
    /usr/bin/time -v kernelmark compare BASE HEAD > /dev/null

Last measured (2026-12-01, the 2-core development VM shared with other work, load 3-7, so
user CPU time is the figure to read; wall time was 2-4x it): 100,000 records, HEAD --scale
1.02. report --format csv: 28 s user, 75 MB peak RSS. compare: 109 s user, 0.55 GB (the
table; --format json 101 s, 0.42 GB), of which reading and checking the two files is about
half. Most of the rest is the bootstrap's draws, 8,000 per timed pair (39,395 pairs).
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
