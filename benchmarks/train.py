"""Training-stage overhead: recembed's `train` stage (vocabulary, corpus_file training, exports)
against calling gensim's corpus_file training directly on the same ~20M-token walk corpus with
the same parameters. Target: within 1.1x.

    python benchmarks/train.py [--tokens 20000000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from common import DATA, append_results, markdown_table

ROOT = Path(__file__).resolve().parents[1]

OURS = r"""
import json, sys, time
from pathlib import Path
from recembed.config import load_config
from recembed.pipeline import StageContext
from recembed.stages import train
run = Path(sys.argv[1])
cfg = load_config(None, ["sequences.enabled=false", "walks.enabled=true", "run.progress=false",
                        "train.max_tokens=0"])  # same epochs as the direct call
out = run / "out"
out.mkdir(exist_ok=True)
t0 = time.perf_counter()
st = train.STAGE
stats = st.run(StageContext(cfg, st.name, run, out, st.declared_reads(cfg),
                            st.declared_writes(cfg)))
print(json.dumps({"seconds": time.perf_counter() - t0, **stats}))
"""

DIRECT = r"""
import json, os, sys, time
from gensim.models import Word2Vec
from recembed.config import load_config
t = load_config(None).train
workers = os.cpu_count()
t0 = time.perf_counter()
m = Word2Vec(corpus_file=sys.argv[1], vector_size=t.vector_size, window=t.window, sg=1,
             negative=t.negative, ns_exponent=t.ns_exponent, sample=t.sample, epochs=t.epochs,
             alpha=t.alpha, min_alpha=t.min_alpha, min_count=t.min_count, workers=workers,
             seed=42)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def make_corpus(tokens: int) -> Path:
    """A walk corpus of ~`tokens` tokens over the power-law benchmark graph (cached)."""
    from recembed.graph import load_graph
    from recembed.walks import random_walks

    run = DATA / f"train_run_{tokens}"
    if (run / "walks.txt").exists():
        return run
    run.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).parent))
    from walks import power_law_graph

    g = load_graph(power_law_graph())
    n = g.shape[0]
    wpn = max(1, round(tokens / (n * 40)))
    random_walks(g, run / "walks.txt", walks_per_node=wpn, walk_length=40, seed=0)
    pd.DataFrame({"code": np.arange(n, dtype=np.int32), "id": [f"n{i}" for i in range(n)]}
                 ).to_parquet(run / "vocabulary.parquet")
    pd.DataFrame({"code": np.arange(n, dtype=np.int32), "category": -1}).to_parquet(
        run / "categories.parquet")
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=20_000_000)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    DATA.mkdir(exist_ok=True)
    run = make_corpus(args.tokens)
    n_tok = sum(len(line.split()) for line in open(run / "walks.txt"))
    direct = json.loads(subprocess.run([sys.executable, "-c", DIRECT, str(run / "walks.txt")],
                                       capture_output=True, text=True, check=True).stdout)
    ours = json.loads(subprocess.run([sys.executable, "-c", OURS, str(run)], capture_output=True,
                                     text=True, check=True).stdout.strip().splitlines()[-1])
    shutil.rmtree(run / "out", ignore_errors=True)
    epochs = ours["epochs"]
    rows = [{"what": "gensim Word2Vec(corpus_file=...) directly", "seconds": round(direct["seconds"], 1),
             "words/s": round(n_tok * epochs / direct["seconds"])},
            {"what": "recembed train stage (vocab + train + exports)",
             "seconds": round(ours["seconds"], 1), "words/s": ours["words_per_s"]}]
    ratio = ours["seconds"] / direct["seconds"]
    table = markdown_table(rows)
    print(table, f"\nratio {ratio:.3f}")
    if not args.no_record:
        append_results("training stage overhead vs gensim directly",
                       f"python benchmarks/train.py --tokens {args.tokens}", table,
                       f"Corpus: {n_tok:,} walk tokens, {epochs} epochs, default parameters, all "
                       f"cores. Ratio recembed / gensim = {ratio:.3f} (target <= 1.1). recembed's "
                       "words/s counts training alone.")


if __name__ == "__main__":
    main()
