"""A large run file read in a second process while this one works on what it has read.

Reading a line (parsing it, checking it) is half of what `compare` does with a run of
100,000 records, and all of `report --format csv` but the writing. With results.RunReader
(..., prefetch=True), a file of PREFETCH_BYTES or more, on a machine that gives this process
two CPUs or more, is read by a child process, `python -P -m kernelmark.prefetch_child`, which
sends the checked records back in batches (pickled, through a pipe; at most AHEAD of them
wait here: memory stays bounded); compare gives each of its two files its own. What comes back
is what records() would give here, in order: the same records, the same places for
record_at, the footer, the warnings, and a refusal raised at the line it names, after the
records before it. If the child stops otherwise (killed, out of memory), the rest of the
file is read here, from the record after the last one received, with a warning.

KERNELMARK_PREFETCH=0 reads every file in this process.
"""

from __future__ import annotations

import os
import pickle
import queue
import subprocess
import sys
import threading
from typing import Iterator

PREFETCH_BYTES = 16 << 20
BATCH = 64                  # records a message (of 1,000 samples each: about half a megabyte)
AHEAD = 32                  # messages read ahead of this process (about 16 MB at most)
MAGIC = b"kmrf"             # the start of each message: output not from prefetch_child is not read on


def wanted(path: str) -> bool:
    if os.environ.get("KERNELMARK_PREFETCH", "1") == "0":
        return False
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:          # not Linux
        cpus = os.cpu_count() or 1
    try:
        return cpus >= 2 and os.path.getsize(path) >= PREFETCH_BYTES
    except OSError:
        return False


def child_command(path: str, keep_samples: bool, sample_arrays: bool) -> list:
    # -P: the current directory is not on the child's sys.path (the harness's workers start
    # the same way, kernelmark/harness/isolation.py); it finds kernelmark by PYTHONPATH.
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe_path, "-m", "kernelmark.prefetch_child", os.path.abspath(path),
            str(int(keep_samples)), str(int(sample_arrays))]


def _frames(pipe, frames: queue.Queue) -> None:
    """Move the child's messages, whole, from the pipe to ``frames`` (None at the end): a
    thread, so the child reads on while this process works (a pipe holds 64 KiB, a tenth
    of one message). It waits in read() and put(), which let the main thread run."""
    try:
        while True:
            head = pipe.read(len(MAGIC) + 8)
            if len(head) < len(MAGIC) + 8:
                break
            if not head.startswith(MAGIC):      # not its message: something else wrote to its output
                frames.put(b"")                 # (records() stops the child)
                break
            body = bytearray(int.from_bytes(head[len(MAGIC):], "little"))   # writable: the samples are views of it
            if pipe.readinto(body) < len(body):
                break
            frames.put(body)
    except (OSError, ValueError, MemoryError):      # the pipe closed under it: records() has returned
        pass
    finally:
        frames.put(None)


def records(reader, where: bool) -> Iterator:
    """What ``reader.records(where)`` gives, read by a child process."""
    from kernelmark import childenv
    from kernelmark.errors import RunFileError
    try:
        proc = subprocess.Popen(child_command(reader.path, reader.keep_samples, reader.sample_arrays),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=childenv.env())
    except OSError as e:            # no interpreter to start (an embedded Python), no processes left
        reader.warnings.append(f"could not start a process to read {reader.path} ({e.strerror or e}); "
                               "it was read by this one")
        yield from reader.records(where, prefetch=False)
        return
    frames: queue.Queue = queue.Queue(maxsize=AHEAD)
    mover = threading.Thread(target=_frames, args=(proc.stdout, frames), daemon=True)
    mover.start()
    resume = None               # (offset, line) after the last record received
    try:
        while True:
            frame = frames.get()
            if frame is None:
                break
            try:
                msg = pickle.loads(memoryview(frame)[8:8 + int.from_bytes(frame[:8], "little")])
            except Exception:       # not its message: something else wrote to its output
                proc.kill()
                break
            if msg[0] == "records":
                _samples_back(msg[1], msg[2], frame)
                for place, rec in msg[1]:
                    yield (place, rec) if where else rec
                resume = (msg[1][-1][0][0] + msg[1][-1][0][1], msg[1][-1][0][2]) if msg[1] else resume
            elif msg[0] == "end":
                reader.footer = msg[1]
                reader.warnings.extend(msg[2])
                return
            else:                   # "error": the line's refusal, as the reader here would raise it
                raise RunFileError(msg[1])
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        reader.warnings.append(f"the process reading {reader.path} stopped (exit status {code}); "
                               "the rest of it was read by this one")
        yield from reader.records(where, resume=resume, prefetch=False)
    finally:
        if proc.poll() is None:
            proc.kill()
        while mover.is_alive():         # let it see the end of the pipe, not a full queue
            try:
                frames.get(timeout=0.1)
            except queue.Empty:
                pass
        proc.stdout.close()
        proc.wait()


# A batch's samples travel apart from its records: one run of doubles after the pickled
# records (which hold each record's count in their place), so that neither process makes
# or unpickles an array for each record (a third of the cost of sending them).

def _samples_out(batch: list) -> tuple:
    """(the counts, the samples' bytes); each record's samples replaced by its count."""
    import numpy as np
    arrays = []
    for _, rec in batch:
        t = rec.get("timing")
        s = t.get("samples_us") if type(t) is dict else None
        if type(s) is np.ndarray:
            t["samples_us"] = s.size
            arrays.append(s)
    return [a.size for a in arrays], (np.concatenate(arrays).tobytes() if arrays else b"")


def _samples_back(batch: list, counts: list, frame: bytearray) -> None:
    if not counts:
        return
    import numpy as np
    start = 8 + int.from_bytes(frame[:8], "little")
    flat = np.frombuffer(frame, dtype=np.float64, offset=start, count=sum(counts))
    at = 0
    for _, rec in batch:
        t = rec.get("timing")
        if type(t) is dict and type(t.get("samples_us")) is int:
            n = t["samples_us"]
            t["samples_us"] = flat[at:at + n]
            at += n
