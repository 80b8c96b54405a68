"""A run file like a large run's: the newest published run's records, ``copies`` times over,
each copy's shapes told apart by one more parameter (so each record is its own case and the
copies share their layouts)."""
import json
from pathlib import Path

PUBLISHED = sorted((Path(__file__).parents[1] / "published").glob("*/*.jsonl"))


def write(path, copies: int) -> list:
    """Write the file at ``path``; the published records, once."""
    lines = [json.loads(x) for x in open(PUBLISHED[-1])]
    recs = [x for x in lines if x.get("type") == "record"]
    with open(path, "w") as f:
        f.write(json.dumps(lines[0]) + "\n")
        for i in range(copies):
            for r in recs:
                f.write(json.dumps({**r, "shape": {**r["shape"], "i": i}}) + "\n")
    return recs
