"""results.csv logging and the validation summary table, shared by both framework trees."""
import csv
import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np


def _format_value(v):
    if isinstance(v, (Integral, np.bool_)):
        return str(int(v))
    if isinstance(v, Real):
        return f'{float(v):.6g}'
    return str(v)


def append_results(csv_path, row):
    """Append one row (column name -> value) to csv_path, writing the header first if the file is new or empty.

    A resumed run appends to the same file, so an existing header must hold exactly the row's keys (in any order:
    values are written in the file's column order); anything else would silently misalign columns, so it raises.
    """
    csv_path = Path(csv_path)
    keys = list(row)
    header = None
    if csv_path.exists() and csv_path.stat().st_size:
        with open(csv_path, newline='') as f:
            header = [s.strip() for s in next(csv.reader(f), [])]
        if sorted(header) != sorted(keys):
            missing, extra = [k for k in header if k not in row], [k for k in keys if k not in header]
            raise ValueError(f'{csv_path}: existing header does not match the row being appended '
                             f'(missing {missing}, unexpected {extra}); write to a new run folder instead')
    else:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, 'a', newline='') as f:
        writer = csv.writer(f)
        if header is None:
            header = keys
            writer.writerow(header)
        writer.writerow([_format_value(row[k]) for k in header])


def format_metrics_table(names, seen, nt_per_class, p, r, ap50, ap, ap_class):
    """YOLOv5 val.py summary: a header, an 'all' row (means over the classes present), then one row per class.

    nt_per_class (nc,) instances of every class; p, r, ap50, ap (mAP50-95) are per class in ap_class order.
    """
    nt = np.asarray(nt_per_class).astype(int)
    p, r, ap50, ap = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (p, r, ap50, ap))
    lookup = names if isinstance(names, dict) else dict(enumerate(names))
    pf = '%22s' + '%11i' * 2 + '%11.3g' * 4

    def mean(a):
        return float(a.mean()) if a.size else 0.0

    lines = [('%22s' + '%11s' * 6) % ('Class', 'Images', 'Instances', 'P', 'R', 'mAP50', 'mAP50-95'),
             pf % ('all', seen, nt.sum(), mean(p), mean(r), mean(ap50), mean(ap))]
    for i, c in enumerate(np.asarray(ap_class).astype(int)):
        lines.append(pf % (lookup.get(c, str(c)), seen, nt[c], p[i], r[i], ap50[i], ap[i]))
    return '\n'.join(lines)


def clear_results(save_dir):
    """A new run in a reused folder (--exist-ok) starts records of its own: it would otherwise continue the earlier
    run's results.csv, and the earlier per_class.csv would mark it finished before it is (and coco.csv report the
    earlier run's COCO figures as its own)."""
    for name in ("results.csv", "per_class.csv", "coco.csv", "annotations.json", "predictions.json"):
        (Path(save_dir) / name).unlink(missing_ok=True)


def truncate_results(csv_path, last_epoch):
    """Drop rows after last_epoch, so a resumed run does not repeat the epoch that was lost to a crash."""
    path = Path(csv_path)
    if not path.is_file():
        return
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    epoch_col = [c.strip() for c in rows[0]].index('epoch')
    kept = [rows[0]] + [r for r in rows[1:] if int(float(r[epoch_col])) <= last_epoch]
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'w', newline='') as f:
        csv.writer(f).writerows(kept)
    os.replace(tmp, path)
