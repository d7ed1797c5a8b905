"""Two or more studies side by side, e.g. the PyTorch and the Jittor tree's runs of one protocol.

    python -m yolocore.study.compare runs/study/pytorch runs/study/jittor     # writes runs/study/compare.md and .png

Per run kind (teacher, student, FGD student): mAP50 and mAP50-95 of each study's finished runs, as means over its
seeds with their standard errors when it has several (study.py --repeats), and with two studies the second minus
the first, whose standard error combines both; then the differences a study pairs by seed (the FGD gain, and the
calibration runs' differences, whose root mean square is the noise between two runs), per study and, with two, the
second's minus the first's paired by seed (a difference of gains, with its standard error over the seeds both have);
with several seeds, every run's mAP50-95 seed by seed, and a plot of the paired differences seed by seed. Each table
gives AP with classes merged too (coco.csv's AP_agnostic) where some run has it. Then each study's time per epoch
(mean over those runs) and, with two, the second's over the first's, with the devices they ran on; then COCO's figures
of the runs that have coco.csv (AP, AP50, AP75, AP of small, medium and large objects) and their differences. Studies
are named by their folders.
"""
import argparse
import math
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from matplotlib.figure import Figure

from yolocore.cli import run_script
from yolocore.study.report import (
    COCO_COLUMNS,
    COCO_NOTE,
    METRIC_NAMES,
    PAIRED,
    RERUN_PERTURBATION,
    RUN_COLORS,
    RUNS,
    add_study_timing,
    by_kind,
    coco_means,
    finished,
    format_seconds,
    load_run,
    load_study,
    mean_and_error,
    pct,
    root_mean_square,
    seed_differences,
    study_run_names,
)
from yolocore.training.record import epoch_seconds

LINE_STYLES = ("-", "--", ":", "-.")
SHORT = {"student": "student", "student_fgd": "FGD", "student_rerun": "student again", "student_fgd_rerun": "FGD again"}


def load_studies(projects):
    """{study name: {run kind: [runs]}}; a folder without any run of a study is an error."""
    studies = {}
    for project in map(Path, projects):
        names = study_run_names(project) if project.is_dir() else []
        if not names:
            raise FileNotFoundError(f"{project}: no study runs (teacher, student, student_fgd with a results.csv)")
        if project.name in studies:
            raise ValueError(f"{project}: two studies named {project.name}; compare folders with different names")
        runs = add_study_timing({name: load_run(project / name) for name in names}, load_study(project))
        studies[project.name] = by_kind(runs)
    return studies


def signed(x):
    return f"{round(100 * x, 1) + 0.0:+.1f}" if np.isfinite(x) else "n/a"  # + 0.0: no "-0.0"


def cell(mean, error):
    return pct(mean) if not np.isfinite(error) else f"{pct(mean)} ± {pct(error)}"


def mean_epoch_seconds(runs):
    seconds = [s for s in map(epoch_seconds, (run["training"] for run in runs)) if s is not None]
    return float(np.mean(seconds)) if seconds else math.nan


def measured(studies):
    """The metrics some finished run has: runs validated before coco.csv, or without pycocotools, lack AP_agnostic."""
    runs = [run for kinds in studies.values() for group in kinds.values() for run in group if finished(run)]
    return [m for m in METRIC_NAMES if any(np.isfinite(run[m]) for run in runs)]


def seed_metrics(studies):
    """The metrics shown seed by seed: mAP50-95, and AP with classes merged where measured (mAP50 adds only noise)."""
    return [m for m in ("mAP50-95", "AP_agnostic") if m in measured(studies)]


def comparison_table(studies):
    names, metrics = list(studies), measured(studies)
    two = len(names) == 2
    header = ["run"] + [f"{name} {METRIC_NAMES[metric]}" for metric in metrics for name in names]
    header += [f"{names[1]} − {names[0]} {METRIC_NAMES[metric]}" for metric in metrics] if two else []
    header += [f"{name} time / epoch" for name in names]
    header += [f"{names[1]} / {names[0]} time"] if two else []
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for kind, label in RUNS.items():
        runs = [[run for run in studies[name].get(kind, []) if finished(run)] for name in names]
        if not any(runs):
            continue
        stats = {metric: [mean_and_error([r[metric] for r in group]) if group else (math.nan, math.nan)
                          for group in runs] for metric in metrics}
        cells = [cell(*s) + (f" ({len(group)})" if len(group) > 1 else "")
                 for metric in metrics for s, group in zip(stats[metric], runs)]
        if two:
            for metric in metrics:
                (m0, e0), (m1, e1) = stats[metric]
                cells.append("n/a" if not np.isfinite(m1 - m0) else f"{100 * (m1 - m0):+.1f}"
                             + (f" ± {pct(math.hypot(e0, e1))}" if np.isfinite(e0) and np.isfinite(e1) else ""))
        seconds = [mean_epoch_seconds(group) for group in runs]
        cells += [format_seconds(t if np.isfinite(t) else None) for t in seconds]
        if two:
            ratio = seconds[1] / seconds[0] if seconds[0] > 0 else math.nan
            cells.append(f"{ratio:.2f}x" if np.isfinite(ratio) else "n/a")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(studies):
    """Each PAIRED difference per study (mean ± standard error over its seeds; root mean square) and, with two
    studies, the second's minus the first's at each seed both have; "" when no study has a pair."""
    names, metrics = list(studies), measured(studies)
    lines = []
    for kind, base, label in PAIRED:
        diffs = {name: seed_differences(studies[name], kind, base, metrics) for name in names}
        if not any(diffs.values()):
            continue
        rows = [(name, list(d.values())) for name, d in diffs.items() if d]
        if len(names) == 2:
            both = [seed for seed in diffs[names[0]] if seed in diffs[names[1]]]
            rows.append((f"{names[1]} − {names[0]}", [{k: diffs[names[1]][seed][k] - diffs[names[0]][seed][k]
                                                          for k in metrics} for seed in both]))
        for name, values in rows:
            if values:
                cells = [mean_and_error([v[k] for v in values]) for k in metrics]
                rms = [root_mean_square([v[k] for v in values]) for k in metrics]
                lines.append(f"| {label} | {name} | {len(values)} | " + " | ".join(
                    signed(m) + (f" ± {pct(e)}" if np.isfinite(e) else "") for m, e in cells)
                    + " | " + " | ".join(map(pct, rms)) + " |")
    if not lines:
        return ""
    return "\n".join(["## Differences paired by seed (points)", "",
                      "Mean ± standard error over the seeds (their number), and the root mean square.", "",
                      "| difference | study | seeds | " + " | ".join(METRIC_NAMES[m] for m in metrics) + " | "
                      + " | ".join(f"rms {METRIC_NAMES[m]}" for m in metrics) + " |",
                      "|---|---|---:|" + "---:|" * 2 * len(metrics), *lines, ""])


def seed_table(studies):
    """Every finished student run's mAP50-95 (and AP with classes merged, where measured), a row per seed, each
    study's FGD gain and, with two studies, the second's gain minus the first's: the figures behind the paired means,
    to see which seeds carry them; "" when no study has several seeds."""
    names = list(studies)
    metrics = seed_metrics(studies)
    by_seed = {name: {kind: {run["opt"].get("seed"): run for run in runs if finished(run)}
                      for kind, runs in studies[name].items() if kind != "teacher"} for name in names}
    columns = [(name, kind) for name in names for kind in SHORT if by_seed[name].get(kind)]
    seeds = sorted({seed for name, kind in columns for seed in by_seed[name][kind]})
    if len(seeds) < 2:
        return ""
    gains = {name: seed_differences(studies[name], "student_fgd", metrics=metrics) for name in names}
    header = [f"{name} {SHORT[kind]}" for name, kind in columns] + [f"{name} FGD gain" for name in names]
    header += [f"{names[1]} − {names[0]} gain"] if len(names) == 2 else []
    lines = ["| seed | " + " | ".join(header) + " |", "|---:|" + "---:|" * len(header)]
    for seed in seeds:
        cells = [" / ".join(pct(by_seed[name][kind][seed][m]) for m in metrics) if seed in by_seed[name][kind] else ""
                 for name, kind in columns]
        cells += [" / ".join(signed(gains[name][seed][m]) for m in metrics) if seed in gains[name] else ""
                  for name in names]
        if len(names) == 2:
            both = all(seed in gains[name] for name in names)
            cells.append(" / ".join(signed(gains[names[1]][seed][m] - gains[names[0]][seed][m]) for m in metrics)
                         if both else "")
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    return "\n".join([f"## Per seed ({' / '.join(METRIC_NAMES[m] for m in metrics)}, %)", "",
                      "Each finished run of a seed (again: the calibration run, weights moved by "
                      f"{RERUN_PERTURBATION}), each study's FGD student minus its plain student, and the difference of "
                      "those gains (points).", "", *lines, ""])


def coco_comparison_table(studies):
    """COCO's figures per run kind and study (means over the seeds that have coco.csv) and, with two studies, the
    second minus the first; "" when no run has them."""
    names = list(studies)
    rows = []
    for kind, label in RUNS.items():
        means = {}
        for name in names:
            means[name], n = coco_means(studies[name].get(kind, []))
            if n:
                rows.append(f"| {label} | {name}" + (f" ({n})" if n > 1 else "") + " | "
                            + " | ".join(map(pct, means[name])) + " |")
        if len(names) == 2 and all(means.values()):
            diffs = ["n/a" if a is None or b is None else f"{100 * (b - a):+.1f}"
                     for a, b in zip(means[names[0]], means[names[1]])]
            rows.append(f"| {label} | {names[1]} − {names[0]} | " + " | ".join(diffs) + " |")
    if not rows:
        return ""
    return "\n".join(["## COCO figures (%)", "", COCO_NOTE + " Means over seeds (their number in brackets); "
                      "differences in points.", "", "| run | study | " + " | ".join(COCO_COLUMNS) + " |",
                      "|---|---|" + "---:|" * len(COCO_COLUMNS), *rows, ""])


def devices_line(studies):
    devices = {name: sorted({run["training"]["device"] for runs in kinds.values() for run in runs
                             if run["training"].get("device")}) for name, kinds in studies.items()}
    return "Devices: " + "; ".join(f"{name}: {', '.join(d) or 'n/a'}" for name, d in devices.items()) + "."


def plot_curves(studies, path):
    """mAP50 per epoch: one colour per run kind, one line style per study."""
    fig = Figure(figsize=(8, 5), tight_layout=True)
    ax = fig.subplots()
    for s, (name, kinds) in enumerate(studies.items()):
        for k, kind in enumerate(RUNS):
            for j, run in enumerate(kinds.get(kind, [])):
                measured = np.isfinite(run["map50_curve"])
                ax.plot(run["epoch"][measured], 100 * run["map50_curve"][measured], LINE_STYLES[s % len(LINE_STYLES)],
                        color=RUN_COLORS[k], linewidth=2 if j == 0 else 0.8,
                        label=f"{RUNS[kind]}, {name}" if j == 0 else None)
    ax.set(xlabel="epoch", ylabel="mAP50 (%)", title="mAP50 on val, per epoch (EMA weights)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=150)
    return path


def plot_seed_differences(studies, path):
    """The paired differences seed by seed: a panel per metric (mAP50-95, and AP with classes merged where measured),
    a colour per study, a marker per difference (the FGD gain, and each calibration run's difference from the run it
    repeats), so the gains can be seen against the noise; None when no study has two seeds of a difference."""
    metrics = seed_metrics(studies)
    styles = {"student_fgd": ("o", "FGD gain"), "student_rerun": ("+", "plain, again minus run"),
              "student_fgd_rerun": ("x", "KD, again minus run")}
    diffs = {(name, kind): seed_differences(studies[name], kind, base, metrics)
             for name in studies for kind, base, _ in PAIRED}
    if max(map(len, diffs.values())) < 2:
        return None
    fig = Figure(figsize=(5 * len(metrics), 5), layout="constrained")
    for ax, metric in zip(np.atleast_1d(fig.subplots(1, len(metrics))), metrics):
        for s, name in enumerate(studies):
            for kind, _, _ in PAIRED:
                d = diffs[name, kind]
                marker, label = styles[kind]
                if d:
                    ax.plot(np.array(list(d)) + 0.15 * (s - (len(studies) - 1) / 2),
                            [100 * v[metric] for v in d.values()], marker, color=RUN_COLORS[1 + s],
                            fillstyle="full" if kind == "student_fgd" else "none", label=f"{label}, {name}")
        ax.axhline(0, color="gray", linewidth=0.8)
        ax.set(xlabel="seed", ylabel="points", title=f"{METRIC_NAMES[metric]}: paired differences")
        ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=8)
    fig.savefig(path, dpi=120)
    return path


def write_comparison(projects, out=None):
    """compare.md, compare_map50.png and, with several seeds, compare_seeds.png in out (default: the first study's
    parent folder); returns compare.md."""
    studies = load_studies(projects)
    out = Path(out) if out else Path(projects[0]).parent
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(studies, out / "compare_map50.png")
    seeds_plot = plot_seed_differences(studies, out / "compare_seeds.png")
    merged = (" and AP with classes merged (COCO's AP with every class made one)"
              if "AP_agnostic" in measured(studies) else "")
    lines = [f"# {' against '.join(studies)}", "", comparison_table(studies), "",
             f"mAP50, mAP50-95{merged} (%) of each run's best weights on the val split; with several seeds, the mean ± "
             "its standard error and (in brackets) the number of seeds. Differences are in points. Time / epoch is the "
             "mean wall time of an epoch, validation included.", "", devices_line(studies), "",
             paired_table(studies), seed_table(studies),
             "![paired differences per seed](compare_seeds.png)\n" if seeds_plot else "",
             "![mAP50 per epoch](compare_map50.png)", "",
             coco_comparison_table(studies)]
    path = out / "compare.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("projects", nargs="+", help="study folders (each as study.py --project wrote it)")
    p.add_argument("--out", default="", help="where to write compare.md and the plot (default: the first's parent)")
    return p.parse_args(argv)


def main(opt):
    path = write_comparison(opt.projects, opt.out or None)
    print(f"Comparison written to {path}")
    return path


if __name__ == "__main__":
    run_script(lambda: main(parse_opt()))
