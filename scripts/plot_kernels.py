"""Kernel by kernel, before and after: seconds per epoch, and achieved GFLOP/s against this
core's measured multiply-add peak (the compute roof of a roofline; these kernels sit under it).

    python scripts/plot_kernels.py BEFORE.json AFTER.json OUT.png

The JSON files are scripts/profile_step.py --json outputs, measured on one machine in one
session.  Kernels present in only one file are drawn for that one alone.  Needs matplotlib
(the [plot] extra).
"""

import json
import sys


def main():
    before_path, after_path, out = sys.argv[1:4]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.load(open(p)) for p in (before_path, after_path)]
    names = []
    for run in runs:
        for k in run["kernels"]:
            if k["kernel"] not in names:
                names.append(k["kernel"])
    rows = {name: [next((k for k in run["kernels"] if k["kernel"] == name), None) for run in runs] for name in names}
    for pair in rows.values():   # a run that timed a kernel without its work: the other run's (the same arithmetic)
        known = next((k for k in pair if k and "work" in k), None)
        for k in pair:
            if k and "work" not in k and known:
                k.update(work=known["work"], unit=known["unit"], rate=known["work"] / k["seconds"] / 1e9)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.42 * len(names) + 1.8), sharey=True)
    ys = range(len(names))
    for side, label, color, off in ((0, "before", "#bbbbbb", 0.2), (1, "after", "#1f77b4", -0.2)):
        secs = [rows[n][side]["seconds"] if rows[n][side] else 0 for n in names]
        rates = [rows[n][side]["rate"] if rows[n][side] and rows[n][side].get("unit") == "GFLOP" else 0 for n in names]
        left.barh([y + off for y in ys], secs, height=0.4, color=color, label=label)
        right.barh([y + off for y in ys], rates, height=0.4, color=color, label=label)
    peak = runs[1]["peak_gflops"]
    right.axvline(peak, color="#d62728", lw=2)
    right.text(peak, -0.9, f" measured peak {peak:.0f} GFLOP/s", color="#d62728", va="top", ha="right")
    left.set_yticks(list(ys), names)
    left.invert_yaxis()
    left.set_xlabel("seconds per epoch (one thread)")
    right.set_xlabel("useful GFLOP/s (multiply-adds of non-zero inputs x 2)")
    left.legend(loc="lower right")
    epoch = ", ".join(f"{lab} {run['epoch_seconds']:.3f} s" for lab, run in zip(("before", "after"), runs))
    fig.suptitle(f"{runs[1]['cpu']}: hidden {runs[1]['hidden']}, batch {runs[1]['batch_size']}; "
                 f"whole training epoch on one thread: {epoch}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
