"""The roll-up beside real decode steps (`kernelmark model ... --measure --check-step`).

Each check is a plain dict made by kernelmark.cli.step_check: the measured step (its timing
summary), the roll-up's kernel sum for the same device, batch and context, their ratio,
the backends the step ran and any accounting mismatch. Here they are only rendered: a
table section, json items, and columns of the csv's decode rows.
"""

from __future__ import annotations

CSV_FIELDS = ("measured_step_us", "kernel_sum_us", "step_over_kernel_sum", "overhead_us",
              "fastest_step_over_kernel_sum", "kernel_sum_here_us", "cuda_graph_step_us",
              "in_step_kernel_calls_us", "in_step_between_calls_us", "beside_step_over_kernel_sum",
              "beside_ci_low", "beside_ci_high")
MOST = 3        # the kernels named as most slowed inside the step
STALL_SHARE = 0.01  # stalled cases below this share of the kernel sum are not called a loaded machine

LABEL = ("measured step: whole decode steps of our reference decoder (random weights, eager torch, the "
         "kernels by the backends the roll-up picked) timed by the same harness; step / kernel sum is the "
         "framework and launch overhead the roll-up leaves out")


def _us(x) -> str:
    return "n/a" if x is None else f"{x:,.1f}"


def _step_status(c: dict) -> str:
    s = c["step"]
    parts = [f"±{100 * s['ci_rel']:.1f}%, {s['samples']} samples"]
    if not s["converged"]:
        parts.append("not converged")
    if s.get("stall"):
        parts.append(f"noisy (stalls): {s['stall']}")
    return "; ".join(parts)


def table_lines(checks: list, tabulate, tf: str) -> list:
    graphs = any("cuda_graph_step" in c for c in checks)
    rows = []
    for c in checks:
        g = c.get("cuda_graph_step") or {}
        rows.append([c["device"], f"decode, batch {c['batch']}", str(c["context"]), _us(c["measured_step_us"]),
                     _us(c["kernel_sum_us"]),
                     f"{c['step_over_kernel_sum']:.3f}" if "step_over_kernel_sum" in c else
                     f"n/a: {c.get('why_no_ratio', '')}",
                     _us(c.get("overhead_us")),
                     f"{c['fastest']['step_over_kernel_sum']:.3f}" if c.get("fastest") else "n/a",
                     _here(c.get("kernels_here")),
                     _us(g.get("median_us")) if g.get("median_us") is not None else (g.get("missing") or ""),
                     _step_status(c)])
        if not graphs:
            del rows[-1][-2]
    heads = ["device", "phase", "context", "measured step µs", "kernel sum µs", "step / kernel sum", "overhead µs",
             "fastest step / fastest kernel sum", "kernels beside the step µs (step / them)", "CUDA graph step µs",
             "step timing"]
    if not graphs:
        heads.remove("CUDA graph step µs")
    out = ["", f"Checked against a real decode step ({LABEL}):", "",
           tabulate(rows, headers=heads, tablefmt=tf, disable_numparse=True)]
    out += paired_lines(checks)
    out += load_lines(checks)
    for c in checks:
        if c["accounting"]:
            out += ["", f"ACCOUNTING MISMATCH at batch {c['batch']} (the step ran kernels the roll-up does not "
                    "count as it does):"] + [f"- {p}" for p in c["accounting"]]
    for c in checks:
        out += gap_lines(c)
    b = checks[0]["backends"] if checks else {}
    if b:
        out += ["", "backends the step ran: " + "; ".join(f"{op} {', '.join(n)}" for op, n in sorted(b.items()))
                + (f"; torch threads {checks[0]['threads']}" if checks[0].get("threads") else "")]
    subs = {k: v for c in checks for k, v in c.get("substituted", {}).items()}
    if subs:
        out += ["run instead of the roll-up's pick (not runnable inside a step here): "
                + "; ".join(f"{k} -> {v}" for k, v in sorted(subs.items()))]
    return out


def _here(h) -> str:
    if not h:
        return "n/a"
    text = f"{_us(h['kernel_sum_us'])} ({h['step_over_kernel_sum']:.3f}"
    if h.get("ci"):
        text += f" [{h['ci'][0]:.3f}, {h['ci'][1]:.3f}], {h['rounds_used']} rounds"
    return text + ")"


def paired_lines(checks: list) -> list:
    """The step and its kernels timed in alternating rounds (CPU): the ratio that machine
    drift between the run's cases and the step does not move, against the 10% goal; and how
    far the roll-up's own kernel sum sits from the one beside the step (that drift)."""
    paired = [c for c in checks if (c.get("kernels_here") or {}).get("ci")]
    if not paired:
        return []
    parts, held, drift = [], [], []
    for c in paired:
        h = c["kernels_here"]
        lo, hi = h["ci"]
        parts.append(f"{h['step_over_kernel_sum']:.3f} [{lo:.3f}, {hi:.3f}] at batch {c['batch']} "
                     f"({h['rounds_used']} rounds" + (f"; {h['stall']}" if h.get("stall") else "") + ")")
        w = h.get("within") or {}
        held.append((c["batch"], bool(w.get("holds")), w.get("share", 0.1)))
        if c.get("kernel_sum_us"):
            drift.append(f"{c['kernel_sum_us'] / h['kernel_sum_us']:.3f} at batch {c['batch']}")
    share = held[0][2]
    yes = [str(b) for b, ok, _ in held if ok]
    no = [str(b) for b, ok, _ in held if not ok]
    verdict = (f"within {100 * share:.0f}% of the step (the whole 95% interval inside {1 - share:.2f}-{1 + share:.2f})"
               f" at batch {', '.join(yes)}" if yes else "")
    if no:
        verdict += ("; " if verdict else "") + f"not shown within {100 * share:.0f}% at batch {', '.join(no)}"
    out = ["", "Paired with the step (each round a whole step, then each of its kernels once, the order alternating; "
           "the ratio taken per round, so the machine's speed drifting over minutes cancels in it): step / kernel "
           "sum " + "; ".join(parts) + ". The kernel sum is " + verdict + "."]
    if drift:
        out.append("The roll-up's kernel sum (its cases timed earlier, in the run) over the kernel sum beside the "
                   "step: " + ", ".join(drift) + " (how far the machine's speed moved between the two).")
    return out


def load_lines(checks: list) -> list:
    """A buyer reads step / kernel sum as overhead; measured under load it is not
    (docs/model-step.md): say so where the step's samples, or the cases the kernel sum
    uses, stalled, and what a step faster than its kernel sum means."""
    why = []
    steps = [c for c in checks if c["step"].get("stall")]
    if steps:
        why.append(f"the step's samples stalled at batch {', '.join(str(c['batch']) for c in steps)}")
    for c in checks:
        ks = c.get("kernel_sum_stalled") or {}
        # a stall in a case of a hundredth of the sum cannot move the ratio by the 10% read off it
        if ks.get("components") and c.get("kernel_sum_us") and ks["us"] >= STALL_SHARE * c["kernel_sum_us"]:
            why.append(f"at batch {c['batch']}, {ks['components']} of the {ks['of']} cases the kernel sum uses were "
                       f"timed while stalled ({100 * ks['us'] / c['kernel_sum_us']:.0f}% of its µs)")
    if not why:
        return []
    out = ["", "LOADED MACHINE: " + "; ".join(why) + " (the cores were busy with other work). A step / kernel "
           "sum taken under load measures that load at two moments minutes apart, not the framework overhead: "
           "run it again on a quiet machine; meanwhile the fastest step / fastest kernel sum is what load "
           "disturbs least."]
    faster = [c for c in checks if c.get("step_over_kernel_sum", 1.0) < 1.0]
    if faster:
        out.append(f"At batch {', '.join(str(c['batch']) for c in faster)} the step ran faster than its kernel sum "
                   "(a negative overhead): the kernels were slowed when their cases were measured, not sped up "
                   "inside the step.")
    return out


def gap_lines(c: dict) -> list:
    """Where the step's time went (CPU; ``in_step`` of the check), in words: between kernel
    calls, and which kernels ran slower inside the step than alone."""
    s = c.get("in_step")
    if not s:
        return []
    more = s["kernel_calls_us"] - s["kernels_alone_us"]
    out = ["", f"Where the step's time goes (decode, batch {c['batch']}; {s['steps']} steps with each kernel call "
           f"timed inside them): step {_us(s['step_us'])} µs = kernel calls {_us(s['kernel_calls_us'])} µs + "
           f"between the calls {_us(s['between_calls_us'])} µs (Python, dispatch, views). The same kernels re-timed "
           f"alone: {_us(s['kernels_alone_us'])} µs, so they took {_us(abs(more))} µs {'more' if more >= 0 else 'less'} "
           "inside the step (why is not measured here: caches the step's other work left cold, the machine's "
           "speed drifting between the two measurements, or other processes on the cores"
           + (", which the step's timing saw: it stalled" if c["step"].get("stall") else "") + ")."]
    slowed = [k for k in s["kernels"] if k["alone_us"] is not None and k["in_step_us"] > k["alone_us"]][:MOST]
    if slowed:
        out.append("most slowed: " + "; ".join(
            f"{k['kernel']} {_us(k['in_step_us'])} µs in the step, {_us(k['alone_us'])} alone" for k in slowed))
    return out


def csv_columns(row: dict, checks: list) -> dict:
    """The check's figures for a summary row (decode rows of the same device and batch)."""
    for c in checks:
        if row.get("phase") == "decode" and c["device"] == row.get("device") and c["batch"] == row.get("batch"):
            g = (c.get("cuda_graph_step") or {}).get("median_us")
            vals = {**c, "cuda_graph_step_us": g,
                    "fastest_step_over_kernel_sum": (c.get("fastest") or {}).get("step_over_kernel_sum"),
                    "kernel_sum_here_us": (c.get("kernels_here") or {}).get("kernel_sum_us"),
                    "in_step_kernel_calls_us": (c.get("in_step") or {}).get("kernel_calls_us"),
                    "in_step_between_calls_us": (c.get("in_step") or {}).get("between_calls_us")}
            here = c.get("kernels_here") or {}
            if here.get("ci"):      # paired rounds (CPU)
                vals.update(beside_step_over_kernel_sum=here["step_over_kernel_sum"], beside_ci_low=here["ci"][0],
                            beside_ci_high=here["ci"][1])
            return {k: vals.get(k) for k in CSV_FIELDS}
    return {}
