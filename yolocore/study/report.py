"""The results table and comparison plots of a teacher / student / FGD-student study, from its run folders.

    python -m yolocore.study.report --project runs/study/pytorch    # writes study.md and the plots there

Each run folder is what train.py writes: results.csv (one row per epoch), opt.yaml, per_class.csv and coco.csv from
the final validation of the best weights (P, R, AP50, AP50-95 per class; COCO's AP, AP50, AP75 and AP of small,
medium and large objects), and weights/last.*, whose training record gives the time per epoch and the device
(yolocore.training.record). study.json, written by yolocore.study.runner beside the runs, adds the exact commands
(and, for runs of older trees, which recorded no time, the time the study measured). A study with several seeds
(yolocore.study.runner --repeats) has a student and an FGD student folder per seed; the report adds their means over
seeds and the FGD gain paired by seed, each with its standard error. A study's student_rerun runs (the plain student
again from its starting weights moved by 1e-7, train.py --perturb) add the same paired difference for them: what
rounding alone moves a run by, the yardstick for the FGD gain and for a difference between frameworks;
student_fgd_rerun runs (the FGD student again, moved the same way) measure it in KD mode, against the FGD student.
"""
import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from matplotlib.figure import Figure

from yolocore.cli import run_script
from yolocore.config import load_model_cfg, load_yaml, write_text_atomically
from yolocore.evaluation.coco import AGNOSTIC_NAMES, agnostic_figures_of_files, read_coco_csv
from yolocore.evaluation.metrics import fitness
from yolocore.training.checkpoints import SUFFIXES, read_checkpoint
from yolocore.training.record import epoch_seconds

RERUN_PERTURBATION = "1e-7"  # train.py --perturb of a study's student_rerun runs
RUNS = {"teacher": "teacher", "student": "student", "student_fgd": "FGD student",
        "student_rerun": f"student again, weights moved by {RERUN_PERTURBATION}",
        "student_fgd_rerun": f"FGD student again, weights moved by {RERUN_PERTURBATION}"}  # run kind -> label
# (run kind, the kind it is paired with at each seed, what their difference measures)
PAIRED = (("student_fgd", "student", "FGD student minus plain student"),
          ("student_rerun", "student", "Rounding alone: plain student again from its weights moved by "
           f"{RERUN_PERTURBATION}, minus plain student"),
          ("student_fgd_rerun", "student_fgd", "Rounding alone in KD mode: FGD student again from its weights moved "
           f"by {RERUN_PERTURBATION}, minus FGD student"))
RUN_COLORS = ("dimgray", "tab:blue", "tab:orange", "tab:green", "tab:purple")
SEEDED_RUN = re.compile(rf"({'|'.join(kind for kind in RUNS if kind != 'teacher')})_seed(\d+)")
STUDY_JSON = "study.json"
MAP50, MAP = "metrics/mAP_0.5", "metrics/mAP_0.5:0.95"
# metric -> its name in reports; AP_agnostic: COCO's AP with every class made one (yolocore.evaluation.coco)
METRIC_NAMES = {"mAP50": "mAP50", "mAP50-95": "mAP50-95", "AP_agnostic": "AP with classes merged"}
METRIC_COLUMNS = ("metrics/precision", "metrics/recall", MAP50, MAP)
COCO_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def seeded_name(kind, seed, first_seed):
    """The run folder of a student kind at a seed. The first seed's keeps the plain name, so a one-seed study
    grows into a several-seed one without training its runs again."""
    return kind if seed == first_seed else f"{kind}_seed{seed}"


def run_kind(name):
    """'student_fgd_seed2' -> 'student_fgd'; any other name is its own kind."""
    match = SEEDED_RUN.fullmatch(name)
    return match.group(1) if match else name


def study_run_names(project):
    """The study's run folders that have a results.csv: the teacher, then the students seed by seed."""
    def order(name):
        match = SEEDED_RUN.fullmatch(name)
        seed = int(match.group(2)) if match else -1  # the first seed's runs have the plain names
        return seed, list(RUNS).index(run_kind(name))

    names = [p.name for p in Path(project).iterdir() if (p / "results.csv").is_file()]
    return sorted((n for n in names if run_kind(n) in RUNS), key=order)


def read_csv_columns(path):
    """A csv of numbers (the first column may be text) as {column: list of values}; empty cells are NaN."""
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path}: empty file, no header")
    header = [s.strip() for s in rows[0]]
    columns = {k: [] for k in header}
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}:{n}: {len(row)} values for {len(header)} columns")
        for k, v in zip(header, row):
            try:
                columns[k].append(float(v) if v.strip() else math.nan)
            except ValueError:
                columns[k].append(v.strip())
    return columns


def load_run(run_dir):
    """What the report needs from one run folder: options, per-epoch metrics, and the final metrics of the best weights
    (from per_class.csv when there is one, else the results.csv row they were chosen from; COCO's from coco.csv, its
    AP with classes merged computed from the json files where coco.csv lacks it; NaN without them)."""
    run_dir = Path(run_dir)
    results = read_csv_columns(run_dir / "results.csv")
    missing = [k for k in ("epoch", *METRIC_COLUMNS) if k not in results]
    if missing:
        raise ValueError(f"{run_dir / 'results.csv'}: lacks columns {', '.join(missing)}")
    opt = load_yaml(run_dir / "opt.yaml")
    metrics = np.array([results[k] for k in METRIC_COLUMNS], dtype=float).T  # (epochs, 4)
    fit = fitness(np.nan_to_num(metrics, nan=-1.0))
    best = int(np.argmax(fit))  # train.py keeps the first epoch of the highest fitness
    run = dict(dir=run_dir, opt=opt, epochs_done=len(metrics), best_epoch=int(results["epoch"][best]) + 1,
               epoch=np.array(results["epoch"], dtype=float) + 1, map50_curve=metrics[:, 2], per_class=None,
               training=training_of(run_dir), coco=None)
    run["P"], run["R"], run["mAP50"], run["mAP50-95"] = metrics[best]
    per_class_path = run_dir / "per_class.csv"
    if per_class_path.is_file():
        per_class = read_csv_columns(per_class_path)
        present = np.array(per_class["instances"]) > 0
        for k in ("P", "R", "AP50", "AP50-95"):
            per_class[k] = np.array(per_class[k], dtype=float)
        # The same means as the validation summary: over the classes present in the split.
        run["P"], run["R"] = per_class["P"][present].mean(), per_class["R"][present].mean()
        run["mAP50"], run["mAP50-95"] = per_class["AP50"][present].mean(), per_class["AP50-95"][present].mean()
        run["per_class"] = per_class
    if (run_dir / "coco.csv").is_file():
        run["coco"] = read_coco_csv(run_dir / "coco.csv")
        if AGNOSTIC_NAMES[0] not in run["coco"]:  # validated by a tree from before coco.csv had them
            run["coco"].update(agnostic_figures_of_files(run_dir) or {})
    run["AP_agnostic"] = (run["coco"] or {}).get("AP_agnostic", math.nan)
    return run


def model_label(cfg):
    """cfg file name plus its depth and width multiples, which say how big the model is."""
    try:
        m = load_model_cfg(cfg)
        return f"{Path(cfg).name} (d {m['depth_multiple']}, w {m['width_multiple']})"
    except (OSError, ValueError):
        return Path(str(cfg)).name


def training_of(run_dir):
    """The training record of a run's last checkpoint, or None (no checkpoint, or one of an older tree)."""
    for suffix in SUFFIXES.values():
        last = Path(run_dir) / "weights" / f"last{suffix}"
        if last.is_file():
            return read_checkpoint(last).get("training")
    return None


def study_timing(record):
    """A training record from what a study of an older tree measured: wall time over segments (one per resume)."""
    segments = (record or {}).get("segments", [])
    return {"device": record.get("device", "n/a"), "epochs": sum(s["epochs"] for s in segments),
            "seconds": sum(s["seconds"] for s in segments)} if segments else {}


def add_study_timing(runs, study):
    """Runs of older trees, whose checkpoints record no training, take the time and device their study measured."""
    for name, run in runs.items():
        run["training"] = run["training"] or study_timing(study.get("runs", {}).get(name))
    return runs


def pct(x):
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def format_seconds(s):
    return "n/a" if s is None else f"{s:.0f} s" if s < 600 else f"{s / 60:.1f} min"


def seeds_of(runs):
    return {run["opt"].get("seed") for name, run in runs.items() if run_kind(name) != "teacher"}


def run_label(name, run, several_seeds):
    label = RUNS.get(run_kind(name), name)
    return f"{label}, seed {run['opt'].get('seed')}" if several_seeds and run_kind(name) != "teacher" else label


def by_kind(runs):
    """{kind: [runs of that kind]}, kinds in table order."""
    groups = {}
    for name, run in runs.items():
        groups.setdefault(run_kind(name), []).append(run)
    return groups


def mean_and_error(values):
    """Mean and standard error of the mean (NaN for a single value)."""
    values = np.asarray(values, dtype=float)
    error = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else math.nan
    return values.mean(), error


def summary_table(runs):
    several = len(seeds_of(runs)) > 1
    lines = ["| run | model | mode | epochs | best epoch | P | R | mAP50 | mAP50-95 | time / epoch | device |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, run in runs.items():
        opt, record = run["opt"], run["training"]
        lines.append(f"| {run_label(name, run, several)} | {model_label(opt.get('cfg', '?'))} | "
                     f"{opt.get('mode', 'train')} | {run['epochs_done']}/{opt.get('epochs', '?')} | "
                     f"{run['best_epoch']} | {pct(run['P'])} | {pct(run['R'])} | **{pct(run['mAP50'])}** | "
                     f"{pct(run['mAP50-95'])} | {format_seconds(epoch_seconds(record))} | "
                     f"{record.get('device', 'n/a')} |")
    return "\n".join(lines)


def per_class_by_kind(runs):
    """{label: (per_class of one run, AP50 per class, mAP50)}, each kind's AP50s averaged over its seeds; only runs
    with a per_class.csv count."""
    kinds = {}
    for kind, group in by_kind(runs).items():
        group = [run for run in group if run["per_class"] is not None]
        if group:
            label = RUNS.get(kind, kind) + (f" (mean of {len(group)} seeds)" if len(group) > 1 else "")
            kinds[label] = (group[0]["per_class"], np.mean([run["per_class"]["AP50"] for run in group], 0),
                            np.mean([run["mAP50"] for run in group]))
    return kinds


def per_class_table(runs):
    kinds = per_class_by_kind(runs)
    if not kinds:
        return "No run has per_class.csv yet (it comes from the final validation of the best weights)."
    first = next(iter(kinds.values()))[0]
    lines = ["| class | val images | val boxes | " + " | ".join(kinds) + " |", "|---|---:|---:|" + "---:|" * len(kinds)]
    for c, cls in enumerate(first["class"]):
        aps = " | ".join(pct(ap50[c]) for _, ap50, _ in kinds.values())
        lines.append(f"| {cls} | {int(first['images'][c])} | {int(first['instances'][c])} | {aps} |")
    return "\n".join(lines)


COCO_NOTE = ("pycocotools on the final validation of the best weights: AP over IoU 0.50:0.95, at 0.50 and at 0.75, "
             "and AP of small, medium and large objects (areas below 32², below 96² and above, in the original "
             "images' pixels; n/a where the split has none), as the FGD paper reports them.")


def coco_means(group):
    """(COCO_COLUMNS averaged over the runs of group that have coco.csv, how many have it); None for a figure the
    split cannot give (no objects of that size: pycocotools' -1), ([], 0) when no run has coco.csv."""
    figures = [run["coco"] for run in group if run["coco"]]
    means = [float(np.mean([f[k] for f in figures])) for k in COCO_COLUMNS] if figures else []
    return [m if m >= 0 else None for m in means], len(figures)


def coco_table(runs):
    """COCO's figures of each kind's best weights, averaged over the seeds that have them; "" when no run has."""
    rows = []
    for kind, group in by_kind(runs).items():
        means, n = coco_means(group)
        if n:
            label = RUNS.get(kind, kind) + (f" (mean of {n} seeds)" if n > 1 else "")
            rows.append(f"| {label} | " + " | ".join(map(pct, means)) + " |")
    if not rows:
        return ""
    return "\n".join(["## COCO figures (%)", "", COCO_NOTE, "", "| run | " + " | ".join(COCO_COLUMNS) + " |",
                      "|---|" + "---:|" * len(COCO_COLUMNS), *rows, ""])


def points(x):
    return round(100 * x, 1) + 0.0  # + 0.0: no "-0.0"


def finished(run):
    """Whether the run's final validation of its best weights has run (it writes per_class.csv)."""
    return run["per_class"] is not None


def seed_means_table(runs):
    """Mean and standard error over seeds of each student kind's finished runs, when the study has several seeds."""
    if len(seeds_of(runs)) < 2:
        return ""
    lines = ["| run | seeds | mAP50 | mAP50-95 |", "|---|---:|---:|---:|"]
    for kind, group in by_kind(runs).items():
        group = [run for run in group if finished(run)]
        if kind != "teacher" and group:
            cells = [mean_and_error([run[k] for run in group]) for k in ("mAP50", "mAP50-95")]
            lines.append(f"| {RUNS.get(kind, kind)} | {len(group)} | "
                         + " | ".join(f"{pct(m)} ± {pct(e)}" for m, e in cells) + " |")
    return "\n".join(["Mean ± standard error over the finished seeds (%):", "", *lines])


def seed_differences(groups, kind, base="student", metrics=("mAP50", "mAP50-95")):
    """{seed: {metric: run of kind minus run of base}} over the seeds where both have finished; groups: by_kind's."""
    def finished_by_seed(k):
        return {run["opt"].get("seed"): run for run in groups.get(k, []) if finished(run)}

    bases, others = finished_by_seed(base), finished_by_seed(kind)
    return {seed: {k: others[seed][k] - bases[seed][k] for k in metrics}
            for seed in sorted(bases) if seed in others}


def root_mean_square(values):
    return float(np.sqrt(np.mean(np.square(values))))


def paired_difference(runs, kind, label, base="student"):
    """Runs of kind minus the run of base of the same seed, both finished: one seed's difference, or the mean over
    seeds with its standard error and the root mean square (for a calibration pair, the size of the noise between
    two runs); label names the difference. AP with classes merged comes too where every run of the pairs has it."""
    groups = by_kind(runs)
    diffs = seed_differences(groups, kind, base, ("mAP50", "mAP50-95", "AP_agnostic"))
    if not diffs:
        return ""
    metrics = [k for k in ("mAP50", "mAP50-95", "AP_agnostic") if all(np.isfinite(d[k]) for d in diffs.values())]
    values = {k: [d[k] for d in diffs.values()] for k in metrics}
    if len(diffs) > 1:
        figures = []
        for k in metrics:
            m, e = mean_and_error(values[k])
            per_seed = ", ".join(f"{points(d):+.1f}" for d in values[k])
            figures.append(f"{points(m):+.1f} ± {pct(e)} {METRIC_NAMES[k]} (per seed: {per_seed})")
        rms = " / ".join(pct(root_mean_square(values[k])) for k in metrics)
        return (f"{label} of the same seed, over {len(diffs)} seeds: {', '.join(figures)}; root mean square {rms} "
                "(points, mean ± standard error).")
    (seed, _), = diffs.items()
    s, o = ({run["opt"].get("seed"): run for run in groups[k]}[seed] for k in (base, kind))
    line = f"{label}: " + ", ".join(f"{points(values[k][0]):+.1f} {METRIC_NAMES[k]}" for k in metrics) + " (points)."
    diff = o["per_class"]["AP50"] - s["per_class"]["AP50"]
    known = np.isfinite(diff)
    return line + f" AP50 is higher on {int((diff[known] > 0).sum())} of {int(known.sum())} classes."


def plot_map50_curves(runs, path):
    """One colour per kind; a kind's further seeds are thin lines."""
    fig = Figure(figsize=(8, 5), tight_layout=True)
    ax = fig.subplots()
    for i, (kind, group) in enumerate(by_kind(runs).items()):
        label = RUNS.get(kind, kind) + (f" ({len(group)} seeds)" if len(group) > 1 else "")
        for j, run in enumerate(group):
            measured = np.isfinite(run["map50_curve"])  # --noval leaves gaps
            ax.plot(run["epoch"][measured], 100 * run["map50_curve"][measured], marker="." if j == 0 else None,
                    linewidth=2 if j == 0 else 0.8, color=RUN_COLORS[i % len(RUN_COLORS)],
                    label=label if j == 0 else None)
    ax.set(xlabel="epoch", ylabel="mAP50 (%)", title="mAP50 on val, per epoch (EMA weights)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=150)
    return path


def plot_class_ap50(runs, path):
    kinds = per_class_by_kind(runs)
    fig = Figure(figsize=(12, 5), tight_layout=True)
    ax = fig.subplots()
    tallest = 0.0
    if kinds:
        classes = [*next(iter(kinds.values()))[0]["class"], "all (mAP50)"]
        width = 0.8 / len(kinds)
        x = np.arange(len(classes))
        for i, (label, (_, class_ap50, map50)) in enumerate(kinds.items()):
            ap50 = 100 * np.array([*np.nan_to_num(class_ap50), map50])
            tallest = max(tallest, ap50.max())
            ax.bar(x + (i - (len(kinds) - 1) / 2) * width, ap50, width, color=RUN_COLORS[i % len(RUN_COLORS)],
                   label=label)
        ax.set_xticks(x, classes, rotation=30, ha="right")
        ax.legend()
    # Scaled to the tallest bar, so the bars of short or weak runs stay readable.
    ax.set(ylabel="AP50 (%)", ylim=(0, min(100.0, max(1.0, 1.1 * tallest))),
           title="AP50 per class on val (best weights)")
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=150)
    return path


def load_study(project):
    path = Path(project) / STUDY_JSON
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid json: {e}") from e


def write_report(project, out=None, names=None):
    """study.md, map50_curves.png and class_ap50.png in out (default: project) from the runs that have a
    results.csv (names: those run folders, in table order; default: the study's); returns the path of study.md."""
    project = Path(project)
    out = Path(out) if out else project
    names = names or (study_run_names(project) if project.is_dir() else [])
    runs = {name: load_run(project / name) for name in names if (project / name / "results.csv").is_file()}
    if not runs:
        raise FileNotFoundError(f"{project}: none of the runs {', '.join(names or RUNS)} has a results.csv yet")
    study = load_study(project)
    add_study_timing(runs, study)
    out.mkdir(parents=True, exist_ok=True)
    plot_map50_curves(runs, out / "map50_curves.png")
    plot_class_ap50(runs, out / "class_ap50.png")
    lines = [f"# {study.get('title', 'Teacher, student and FGD student')}", ""]
    if study.get("protocol"):
        lines += [study["protocol"], ""]
    lines += [summary_table(runs), ""]
    means = seed_means_table(runs)
    lines += [means, ""] if means else []
    differences = [paired_difference(runs, kind, label, base) for kind, base, label in PAIRED]
    lines += [part for line in differences if line for part in (line, "")]
    lines += ["mAP50, mAP50-95, P and R (%) are those of the best weights (highest 0.1 mAP50 + 0.9 mAP50-95 over the "
              "validated epochs) on the val split; time / epoch is the mean wall time of its epochs, validation "
              "included.", "",
              "## AP50 per class (%)", "", per_class_table(runs), "", coco_table(runs),
              "![mAP50 per epoch](map50_curves.png)", "", "![AP50 per class](class_ap50.png)", ""]
    commands = [study["runs"][n]["command"] for n in runs if study.get("runs", {}).get(n, {}).get("command")]
    if commands:
        lines += ["## Commands", "", "```bash", *commands, "```", ""]
    path = out / "study.md"
    write_text_atomically(path, "\n".join(lines))
    return path


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", required=True, help="folder holding the run folders (and study.json)")
    p.add_argument("--out", default="", help="where to write study.md and the plots (default: --project)")
    p.add_argument("--runs", nargs="+", help="run folder names, in table order (default: the study's runs)")
    return p.parse_args(argv)


def main(opt):
    path = write_report(opt.project, opt.out or None, opt.runs)
    print(f"Report written to {path}")
    return path


if __name__ == "__main__":
    run_script(lambda: main(parse_opt()))
