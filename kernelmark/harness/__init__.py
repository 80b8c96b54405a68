"""The harness: device profile, peaks, timing, statistics, the runner and its worker processes.

It knows no op and no kernel by name."""
