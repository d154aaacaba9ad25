"""The skip-gram search for the exported vectors (issue 24, `calibrate.sgns`): per log, search
on against search off, from two finished run directories per log.

    recembed run CONFIG --set "calibrate.sgns=['ns_exponent','window','sample']" --run-dir R/<log>-on
    recembed run CONFIG --set "calibrate.sgns=[]" --run-dir R/<log>-off
    python benchmarks/sgns.py --runs R --logs yoochoose,diginetica,music [--record]

Prints (and with --record appends to RESULTS.md) the choice table: the chosen settings, the
validation blend and vectors-alone objectives (Recall@20 + MRR@20) with their standard errors,
the holdout `:ann` Recall@20 (the exported vectors alone) with its 95% interval, the served
`recommend` Recall@20, the item-kNN and best session-kNN baselines of the same run, and the
tokens calibration trained against the final model's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import append_results, markdown_table


def _holdout(m: dict, name: str) -> dict:
    return m["methods"][name]["allow_repeats"]


def _r20(m: dict, name: str, interval: bool = False) -> str:
    h = _holdout(m, name)
    if not interval:
        return f"{h['recall@20']:.4f}"
    return (f"{h['recall@20']:.4f} [{h['ci95_lo:recall@20']:.3f}, "
            f"{h['ci95_hi:recall@20']:.3f}]")


def row(run: Path, log: str, mode: str) -> dict:
    """One table row from a finished run directory."""
    cal = json.loads((run / "calibration.json").read_text())
    m = json.loads((run / "metrics.json").read_text())
    train = json.loads((run / "train.json").read_text())
    done = json.loads((run / "calibrate.done.json").read_text())
    sg = cal.get("sgns") or {}
    v = dict(cal.get("validation") or {})
    search = ""
    if sg.get("decision") == "searched":
        sv = sg["validation"]
        search = (f"vectors {sv['default_vectors_objective']:.4f} -> {sv['vectors_objective']:.4f}"
                  f" ± {sv['vectors_se']:.4f}; blend {sv['default_objective']:.4f} -> "
                  f"{sv['objective']:.4f} ± {sv['objective_se']:.4f}")
        changed = {k: x for k, x in sg["chosen"].items() if sg["default"].get(k) != x}
        chosen = ", ".join(f"{k}={x}" for k, x in changed.items()) or "defaults"
        tried = f"{len(sg['tried']) - 1} tried, {len(sg['not_tried'])} over budget"
    else:
        chosen, tried = "(off)", ""
    ann = next(k for k in m["methods"] if k.endswith(":ann"))
    serving = next(k for k in m["methods"] if k.endswith(":serving"))
    sknn = max((k for k in ("vsknn", "stan", "vstan") if k in m["methods"]),
               key=lambda k: _holdout(m, k)["recall@20"])
    cost = cal.get("cost") or {}
    return {
        "log": log, "search": mode, "chosen": chosen, "search tries": tried,
        "corpus": f"{cal.get('corpus')} {cal.get('target_tokens'):,}",
        "postprocess": cal.get("postprocess"),
        "search at the smallest amount: val default -> chosen": search,
        "winner's val blend obj ± SE": f"{v['objective']:.4f} ± {v['objective_se']:.4f}",
        "winner's val vectors obj ± SE": f"{v['vectors_objective']:.4f} ± {v['vectors_se']:.4f}",
        "holdout queries": m["methods"][ann]["allow_repeats"]["queries"],
        "holdout :ann R@20 [95%]": _r20(m, ann, True),
        "holdout recommend R@20": _r20(m, serving),
        "item-kNN R@20": _r20(m, "item_knn"),
        "best session-kNN R@20": f"{_r20(m, sknn)} ({sknn})",
        "tokens trained (candidates)": f"{cost.get('tokens_trained', 0):,}",
        "final tokens": f"{train['tokens_trained']:,}",
        "ratio": f"{cost.get('tokens_trained', 0) / max(train['tokens_trained'], 1):.2f}",
        "calibrate s": round(done["seconds"]),
    }


def tried_rows(run: Path, log: str) -> list[dict]:
    """Every skip-gram setting the search tried in one run (calibration.json's sgns.tried)."""
    sg = json.loads((run / "calibration.json").read_text()).get("sgns") or {}
    return [{"log": log, "settings": ", ".join(f"{k}={v}" for k, v in r["settings"].items()),
             "val blend obj ± SE": f"{r['objective']:.4f} ± {r['objective_se']:.4f}",
             "val vectors obj ± SE": f"{r['vectors_objective']:.4f} ± {r['vectors_se']:.4f}",
             "tokens": f"{r['tokens_trained']:,}", "postprocess": r["postprocess"],
             "chosen": "yes" if r["chosen"] else ""} for r in sg.get("tried") or []]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True, help="folder holding <log>-on and <log>-off")
    ap.add_argument("--logs", required=True, help="comma-separated log names")
    ap.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    ap.add_argument("--title", default="skip-gram settings for the exported vectors (issue 24)")
    ap.add_argument("--note", default="")
    ap.add_argument("--command", default="see the module docstring",
                    help="the run commands, for RESULTS.md")
    args = ap.parse_args()
    rows = []
    for log in args.logs.split(","):
        for mode in ("off", "on"):
            run = Path(args.runs) / f"{log}-{mode}"
            if (run / "metrics.json").exists():
                rows.append(row(run, log, mode))
    table = markdown_table(rows)
    tried = [r for log in args.logs.split(",") for r in tried_rows(Path(args.runs) / f"{log}-on",
                                                                   log)
             if (Path(args.runs) / f"{log}-on" / "calibration.json").exists()]
    if tried:
        table += "\n\nEvery setting tried (search on; validation, candidates at the smallest " \
                 "amount):\n\n" + markdown_table(tried)
    print(table)
    if args.record:
        append_results(args.title, args.command, table, args.note)


if __name__ == "__main__":
    main()
