"""The reading process of kernelmark/prefetch.py: ``python -P -m kernelmark.prefetch_child
PATH KEEP_SAMPLES SAMPLE_ARRAYS`` reads the run file at PATH as results.RunReader does and
writes what it reads to its standard output, a message at a time: the records in batches
(prefetch._samples_out), then the footer and the warnings, or the refusal of a line after
the records before it. Each message: prefetch.MAGIC and its length, its pickle's length, the
pickle, then the batch's samples."""

from __future__ import annotations

import os
import pickle
import sys

from kernelmark import prefetch, results
from kernelmark.errors import RunFileError


def main(argv: list) -> int:
    path, keep, arrays = argv[0], argv[1] == "1", argv[2] == "1"
    out = sys.stdout.buffer

    def send(msg, samples: bytes = b"") -> None:
        # MAGIC, [length of all that follows][length of the pickle][the pickle][the samples]
        body = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(prefetch.MAGIC + (8 + len(body) + len(samples)).to_bytes(8, "little"))
        out.write(len(body).to_bytes(8, "little"))
        out.write(body)
        out.write(samples)

    def send_batch(batch: list) -> None:
        counts, samples = prefetch._samples_out(batch)
        send(("records", batch, counts), samples)

    try:
        with results.RunReader(path, keep_samples=keep, sample_arrays=arrays) as reader:
            batch = []
            try:
                for item in reader.records(where=True, prefetch=False):
                    batch.append(item)
                    if len(batch) >= prefetch.BATCH:
                        send_batch(batch)
                        batch = []
            except RunFileError as e:
                send_batch(batch)
                send(("error", str(e)))
                return 0
            send_batch(batch)
            send(("end", reader.footer, reader.warnings))
        out.flush()
    except RunFileError as e:         # the header: the parent read it already, so the file changed
        send(("error", str(e)))
    except BrokenPipeError:           # the parent stopped reading
        pass
    return 0


if __name__ == "__main__":
    from kernelmark import gcpause, heap
    heap.keep_freed()       # each batch's samples are joined in a fresh half megabyte
    try:
        os.nice(5)          # the parent, which waits on it, comes first where CPUs are short
    except (AttributeError, OSError):
        pass
    with gcpause.paused():
        sys.exit(main(sys.argv[1:]))
