"""One adapter per stage: what it reads and writes (artifacts of `recembed.artifacts`, outside
inputs), the config sections that enter its fingerprint, and a `run(ctx)` that unpacks the
config and calls the stage module's plain functions. The stage modules never see a Config.

`STAGES` is the nightly plan; pass it to `recembed.pipeline.run_pipeline(cfg, plan=STAGES)`.
The runner derives the order from the declarations (a stage runs after the stages that write
what it reads), so the list's order only breaks ties.

Adding a stage (e.g. `calibrate`)
--------------------------------
1. Declare any new file in `recembed/artifacts.py`: ``CHOICE = Artifact("calibration.json")``
   (``kind="folder"`` for a folder of part files; ``published=True`` to ship it in a version).
2. Write `recembed/stages/calibrate.py`::

       def run(ctx: StageContext) -> dict:
           train = pd.read_parquet(ctx.read(A.SESSIONS_TRAIN))   # only declared reads
           choice = calibrate(train, budget_s=ctx.cfg.calibrate.budget_s)
           A.write_json(ctx.write(A.CHOICE), choice)             # only declared writes
           return {"chosen": choice["name"]}                      # run-summary statistics

       STAGE = Stage("calibrate", run, reads=(A.SESSIONS_TRAIN,), writes=(A.CHOICE,),
                     sections=("calibrate",))

   `reads` / `writes` may be functions of the config; outside inputs are `A.InputFiles(...)`
   or `A.PublishedRoot(dir)` (their stamps enter the fingerprint).
3. Add ``calibrate.STAGE`` to `STAGES` below, and declare `A.CHOICE` in the reads of every
   stage that uses it: that alone orders the stages and makes their fingerprints depend on it.
"""

from __future__ import annotations

from recembed.stages import (
    calibrate,
    catalog,
    evaluate,
    graph,
    index,
    ingest,
    publish,
    sequences,
    sessionize,
    train,
    walks,
)

STAGES = [ingest.STAGE, sessionize.STAGE, calibrate.STAGE, graph.STAGE, walks.STAGE, sequences.STAGE,
          catalog.STAGE, train.STAGE, index.STAGE, evaluate.STAGE, publish.STAGE]
