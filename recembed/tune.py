"""`recembed tune CONFIG`: the full search over corpus, training and serving settings (issue 12),
with Optuna, on the same validation split as the built-in self-calibration (`recembed.calibrate`).

The run goes up to `sessionize`; every trial then trains one model on the calibration-train
sessions (`split` = 0; optionally only the most recent `sample_sessions` of them), chooses its
serving blend on the validation sessions (`split` = 2) with `calibrate.choose_blend` (no
retraining: the blend is searched on the trial's model), and scores Recall@20 + MRR@20 of that
blend (allow-repeats protocol), exactly like a calibration candidate. The holdout is never read.

Search (TPE sampler seeded from `run.seed`, see `SPACE` for the ranges): corpus (both / sessions
/ walks), walks.method (deepwalk / node2vec with p, q), train.window, train.vector_size,
train.ns_exponent, train.negative, the training amount train.target_tokens (log-uniform),
session.half_life_days (categorical incl. inf), and the blend. Keys a config sets explicitly
where "auto" is allowed win, as in calibration: walks.enabled / sequences.enabled (then the
corpus is fixed), train.epochs or train.target_tokens (then the training amount is fixed),
serving.weights / decay / temperature / neighbours / candidates / neighbour_sample (never
changed by the blend search); serving.vectors_decay (the exported query's decay) as calibration
chooses it, per trial.
`space` fixes or narrows any other key.

Pruning: a gensim epoch-end callback (`train_word2vec(callbacks=...)`) scores the model's
directional next-item ranking (decayed prefix of input vectors . output vectors, the item
being viewed excluded; Recall@20 + MRR@20 over the whole catalogue) on up to `prune_queries`
validation queries each time training crosses a quarter of its epoch schedule, reports it with
`trial.report(value, step)` where step = 25 / 50 / 75 / 100 (percent of the schedule done; trials
of different epoch counts compare at the same share of their learning-rate decay), and raises
`optuna.TrialPruned` when `trial.should_prune()` says so. The directional ranking is the right
early signal: rules, session neighbours, repeats and popularity come from the same sessions in
every trial, so only the embeddings differ between trials. Default pruner: median of earlier
trials at the same step, after 5 complete trials, from step 50 on.

Storage: SQLite at `<run>/tune.db`, study `<run.name>-tune`; rerunning the same command
continues the same study (`trials` more trials; a trial left running by a crash is marked failed
and queued again), and `optuna-dashboard sqlite:///<run>/tune.db` or
`optuna.load_study(...)` inspect it. The best trial is written as `<run>/tuned.toml` in the
config's own sections, which a pipeline TOML can `include` (recembed.config.load_config).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recembed import artifacts as A

# the report draws the study (it sits below the stages, which cannot import this module)
from recembed.report import TUNE_OBJECTIVE, tuning_section_html  # noqa: F401

log = logging.getLogger("recembed")

INF = math.inf
# The search space: a list = categorical, (lo, hi) = range (int when both are ints), any other
# value = fixed. Keys in LOG_SCALE are sampled log-uniformly. `tune(space=...)` overrides entries.
SPACE: dict[str, Any] = {
    "corpus": ["both", "sessions", "walks"],
    "walks.method": ["deepwalk", "node2vec"],
    "walks.p": (0.25, 4.0),
    "walks.q": (0.25, 4.0),
    "train.window": (1, 10),
    "train.vector_size": [32, 64, 128],
    "train.negative": (3, 25),
    "train.ns_exponent": (0.0, 0.75),
    "train.target_tokens": (300_000, 30_000_000),
    "session.half_life_days": [7.0, 14.0, 30.0, 90.0, INF],
}
LOG_SCALE = frozenset({"walks.p", "walks.q", "train.negative", "train.target_tokens"})
OBJECTIVE = TUNE_OBJECTIVE
TIME_BUDGET = "time budget"  # why a trial stopped early (its user attribute "stopped")


class TuneError(ValueError):
    """A search that cannot run as asked; the message says what to change."""


class TuneLocked(TuneError):
    """Another `recembed tune` holds the run directory (the CLI exits with 5, as for a held
    run directory)."""


@dataclass
class TuneResult:
    """What a `tune` call left: the run directory, the study, the best trial, tuned.toml."""

    run_dir: Path
    study_name: str
    storage: str
    tuned_path: Path | None
    best: dict | None
    trials: list[dict] = field(default_factory=list)
    added: int = 0
    seconds: float = 0.0
    stopped: str = ""  # why fewer trials ran than asked ("" = all ran)

    @property
    def include_line(self) -> str:
        """The line that makes a pipeline TOML use the tuned settings (an absolute path, so it
        works wherever the TOML lives; keys set in that TOML still win)."""
        return f'include = ["{self.tuned_path.resolve()}"]' if self.tuned_path else ""

    def table(self) -> str:
        """The trials as a text table (number, state, objective, recall, mrr, seconds, params)."""
        return trials_table(self.trials)


def tune(cfg, run_dir: str | Path | None = None, *, trials: int = 50,
         time_budget_s: float | None = 3600.0, sample_sessions: int = 0,
         seed: int | None = None, space: dict[str, Any] | None = None, pruner=None,
         prune_queries: int = 1000,
         echo=print) -> TuneResult:
    """Run (or continue) the Optuna study of a config; write `<run>/tuned.toml`.

    Parameters
    ----------
    cfg : recembed.config.Config
        The pipeline config; run.seed seeds the sampler and every model, run.name names the
        study, calibrate.max_queries bounds the validation queries.
    run_dir : path or None
        Run directory (default: the config's, as `recembed run` uses; ingest and sessionize
        are reused from it when up to date).
    trials : int >= 1
        Trials to add in this call (a resumed study keeps its earlier ones).
    time_budget_s : float, seconds, or None
        No new trial starts after this much time in this call, and a running trial stops at
        its next epoch end (pruned, recorded as stopped by the budget); None or 0 = no limit.
    sample_sessions : int >= 0
        Tune on the most recent N calibration-train sessions only (0 = all of them); a study
        is bound to one value (a resumed study with another is refused).
    seed : int or None
        Sampler seed; None = run.seed. The sampler of a resumed study is seeded with
        seed + trials so far, so it never replays the first call's draws.
    space : dict or None
        Entries overriding `SPACE` (same forms: list, (lo, hi) or a fixed value).
    pruner : optuna pruner or None
        None = `optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=25)`.
    prune_queries : int >= 1
        Validation queries scored at each pruning checkpoint (the first of the sampled ones).
    echo : callable
        Progress lines (one per trial).
    """
    from recembed.pipeline import default_run_dir

    t0 = time.perf_counter()
    if trials < 1:
        raise TuneError(f"--trials must be at least 1 (got {trials})")
    if sample_sessions < 0:
        raise TuneError(f"--sample-sessions must be >= 0 (got {sample_sessions}; 0 = all)")
    sp = _space(space)
    run = Path(run_dir) if run_dir else default_run_dir(cfg)
    run.mkdir(parents=True, exist_ok=True)
    try:
        with A.exclusive_lock(A.TUNE_LOCK.path(run)):
            return _tune_locked(cfg, run, trials=trials, time_budget_s=time_budget_s,
                                sample_sessions=sample_sessions, seed=seed, sp=sp,
                                pruner=pruner, prune_queries=prune_queries, echo=echo, t0=t0)
    except A.LockHeld as e:
        raise TuneLocked(f"{run} is being tuned by another `recembed tune` ({e.holder}): two "
                         "searches on one run directory would delete each other's trials; "
                         "wait for it to finish, or tune into another --run-dir") from None


def _tune_locked(cfg, run: Path, *, trials: int, time_budget_s: float | None,
                 sample_sessions: int, seed: int | None, sp: dict, pruner, prune_queries: int,
                 echo, t0: float) -> TuneResult:
    """`tune` once the run directory's tune lock is held."""
    import optuna

    from recembed import settings as S
    from recembed.calibrate import validation_set
    from recembed.pipeline import EXIT_BAD_INPUT, PipelineError, run_pipeline
    from recembed.stages import STAGES
    from recembed.train import EmptyVocabulary

    # the catalog too when there is one: trials score cold targets as calibration does
    needs = ["sessionize", *(["catalog"] if S.has_catalog(cfg) else [])]
    run_pipeline(cfg, run, plan=STAGES, stages=needs, echo=lambda s: None)
    data = _tuning_data(run, sample_sessions, S.cold_params(cfg) if S.has_catalog(cfg) else None)
    split = data["split"]
    if split.empty:
        raise TuneError(f"{run}: no validation split (too few training sessions); lower "
                        "validation.min_sessions or give a longer log")
    vs = validation_set(split, data["n_items"], data["catalog"],
                        max_queries=cfg.calibrate.max_queries, seed=cfg.run.seed)
    q, qstats = vs.queries, vs.stats
    if not len(q):
        raise TuneError(f"{run}: no validation query has a target seen in calibration "
                        "training; raise --sample-sessions or validation.share")
    seed = cfg.run.seed if seed is None else seed
    storage = f"sqlite:///{A.TUNE_DB.path(run)}"
    name = f"{cfg.run.name}-tune"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage, study_name=name, direction="maximize", load_if_exists=True,
        pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=25))
    bound = {"sample_sessions": int(sample_sessions),
             "calibration_sessions": int(split.ct["session"].nunique()),
             "validation_queries": len(q), "seed": int(cfg.run.seed)}
    _bind(study, bound, run)
    _requeue_stale(study)
    # seeded by what is already stored: a resumed study continues, it does not replay
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    # the budget bounds the running trial too: its pruning callback stops it at the deadline
    deadline = time.monotonic() + time_budget_s if time_budget_s else None
    objective = _objective(
        S.calibration_plan(cfg, progress=False), run, data, vs, sp, prune_queries, echo,
        fixed_corpus=S.corpus_set(cfg), amount_set=S.training_amount_set(cfg), seed=cfg.run.seed,
        threads=cfg.run.n_threads(), deadline=deadline, trials=trials,
        first=len(study.trials))
    before = len(study.trials)
    try:
        study.optimize(objective, n_trials=trials, timeout=time_budget_s or None, catch=())
    except EmptyVocabulary as e:
        raise PipelineError(f"train.min_count={cfg.train.min_count} is above the corpus count "
                            "of every item: nothing left to train; lower train.min_count",
                            EXIT_BAD_INPUT) from e
    finally:
        shutil.rmtree(A.TUNE_WORK.path(run), ignore_errors=True)
    rows = [_trial_row(t) for t in study.trials]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = tuned = None
    if done:
        b = study.best_trial
        best = _trial_row(b)
        tuned = A.TUNED.path(run)
        tuned.write_text(tuned_toml(b, study_name=name, n_trials=len(study.trials),
                                    sample_sessions=sample_sessions))
    added = len(study.trials) - before
    stopped = sum(t.user_attrs.get("stopped") == TIME_BUDGET for t in study.trials[before:])
    # why fewer trials ran than asked: the budget stopped the search (and maybe a running trial)
    why = "" if added >= trials else (
        f"the time budget ({time_budget_s:g} s) ran out after {added} of {trials} trials"
        + (f"; {stopped} running trial stopped at an epoch end" if stopped else ""))
    res = TuneResult(run, name, storage, tuned, best, rows, added, time.perf_counter() - t0,
                     stopped=why)
    A.TUNE_RECORD.path(run).write_text(json.dumps(
        {"study": name, "storage": storage, "objective": OBJECTIVE, "bound": bound,
         "validation_queries": qstats, "best": best, "tuned": str(tuned) if tuned else None,
         "include": res.include_line, "trials": len(rows), "trials_this_call": added,
         "stopped": why, "states": pd.Series([r["state"] for r in rows]).value_counts()
         .to_dict(), "seconds_this_call": round(res.seconds, 3)}, indent=2, default=str))
    return res


def parse_space(items: list[str]) -> dict[str, Any]:
    """`key=value` strings (the CLI's --space) as a `space` dict: `lo..hi` = a range,
    a TOML list = categorical, any other TOML value (or bare word) = fixed."""
    from recembed.config import tomllib

    out: dict[str, Any] = {}
    for it in items:
        key, sep, value = it.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise TuneError(f"--space {it!r} must look like key=value, e.g. train.window=2..6")
        if ".." in value and not value.startswith(("[", '"', "'")):
            lo, hi = (tomllib.loads(f"v = {x.strip()}")["v"] for x in value.split("..", 1))
            out[key] = (lo, hi)
            continue
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value
    return out


def tuned_toml(trial, *, study_name: str = "", n_trials: int = 0,
               sample_sessions: int = 0) -> str:
    """The best trial's settings as TOML in the config's own sections (header comments say
    where they came from and how to use them)."""
    import tomli_w

    body: dict[str, dict] = {}

    def put(key: str, value) -> None:
        sec, name = key.split(".", 1)
        body.setdefault(sec, {})[name] = value

    values = dict(trial.user_attrs.get("settings", {}))
    for key, value in values.items():
        put(key, value)
    ua = trial.user_attrs
    head = [f"# written by `recembed tune`: best of {n_trials} trials of study {study_name!r} "
            f"(trial #{trial.number})",
            f"# {OBJECTIVE}: {trial.value:.4f} (recall@20 {ua.get('recall@20', 0):.4f}, "
            f"mrr@20 {ua.get('mrr@20', 0):.4f}); "
            + (f"tuned on the {sample_sessions:,} most recent calibration-train sessions"
               if sample_sessions else "tuned on every calibration-train session"),
            f"# use: include = [\"{A.TUNED.name}\"] at the top of a pipeline TOML (keys set in that "
            "file win over these)", ""]
    return "\n".join(head) + tomli_w.dumps(body)


def trials_table(rows: list[dict]) -> str:
    """Text table of trial rows (as in TuneResult.trials)."""
    lines = [f"{'trial':>5}  {'state':<9}{'objective':>10}{'recall@20':>10}{'mrr@20':>8}"
             f"{'seconds':>9}  settings"]
    for r in rows:
        val = "" if r["value"] is None else f"{r['value']:.4f}"
        rec = "" if r.get("recall@20") is None else f"{r['recall@20']:.4f}"
        mrr = "" if r.get("mrr@20") is None else f"{r['mrr@20']:.4f}"
        sec = "" if r.get("seconds") is None else f"{r['seconds']:.1f}"
        params = ", ".join(f"{k}={_short(v)}" for k, v in r["params"].items())
        lines.append(f"{r['number']:>5}  {r['state']:<9}{val:>10}{rec:>10}{mrr:>8}{sec:>9}  "
                     f"{params}")
    return "\n".join(lines)


# ---------------------------------------------------------------- helpers


def _space(over: dict[str, Any] | None) -> dict[str, Any]:
    sp = dict(SPACE)
    for key, value in (over or {}).items():
        if key not in SPACE:
            raise TuneError(f"unknown search key {key!r}; keys: {', '.join(SPACE)}")
        if isinstance(value, list) and not value:
            raise TuneError(f"search key {key!r}: an empty list leaves nothing to try")
        if isinstance(value, tuple) and (len(value) != 2 or value[0] > value[1]):
            raise TuneError(f"search key {key!r}: a range is (lo, hi) with lo <= hi")
        sp[key] = value
    return sp


def _suggest(trial, key: str, spec):
    """One value of `spec` (see SPACE) for `key`; fixed values are recorded, not suggested."""
    if isinstance(spec, list):
        if len(spec) == 1:
            return spec[0]
        return trial.suggest_categorical(key, spec)
    if isinstance(spec, tuple):
        lo, hi = spec
        if lo == hi:
            return lo
        if isinstance(lo, int) and isinstance(hi, int):
            return trial.suggest_int(key, lo, hi, log=key in LOG_SCALE)
        return trial.suggest_float(key, float(lo), float(hi), log=key in LOG_SCALE)
    return spec


def _tuning_data(run: Path, sample_sessions: int, cold) -> dict:
    """The calibration split of a run directory (`recembed.calibrate.calibration_split`), the
    catalogue size and, with `cold` (`recembed.settings.ColdParams`, None = no catalog), the
    catalog as calibration sees it."""
    from recembed.calibrate import calibration_split
    from recembed.candidates import CalibrationCatalog

    train = pd.read_parquet(A.SESSIONS_TRAIN.path(run), columns=["session", "item", "ts"])
    table = pd.read_parquet(A.SESSION_TABLE.path(run), columns=["session", "end", "split"])
    vocab = pd.read_parquet(A.VOCABULARY.path(run), columns=["code", "id"])
    catalog = None
    if cold is not None:
        catalog = CalibrationCatalog.build(
            pd.read_parquet(A.CATALOG.path(run)), vocab,
            pd.read_parquet(A.CATEGORIES.path(run))["category"].to_numpy(), cold)
    split = calibration_split(train, table, max_sessions=sample_sessions)
    return {"split": split, "n_items": len(vocab), "catalog": catalog}


def _bind(study, bound: dict, run: Path) -> None:
    """A study keeps one objective: refuse to add trials scored on other data."""
    prev = study.user_attrs.get("bound")
    if prev is None:
        study.set_user_attr("bound", bound)
        return
    diff = {k: (prev.get(k), v) for k, v in bound.items() if prev.get(k) != v}
    if diff:
        what = ", ".join(f"{k} {a} (stored) vs {b} (now)" for k, (a, b) in diff.items())
        raise TuneError(f"{A.TUNE_DB.path(run)} holds a study scored on other data ({what}); "
                        "rerun with the stored settings to continue it, or tune into another "
                        "run directory (--run-dir)")


def _requeue_stale(study) -> None:
    """A trial left RUNNING by a crashed or killed search: mark it failed and queue its
    parameters again (one tune process per run directory)."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params)
        log.warning("tune: trial %d was left running by an earlier search; queued again",
                    t.number)


def _objective(plan, run: Path, data: dict, vs, sp: dict, prune_queries: int, echo, *,
               fixed_corpus: str | None, amount_set: bool, seed: int, threads: int,
               deadline: float | None = None, trials: int = 0, first: int = 0):
    """The trial function: train one model, choose its blend, return the objective.
    `fixed_corpus`: the corpus the config sets (None = searched); `amount_set`: train.epochs
    or train.target_tokens is set (the plan's one amount is kept)."""
    from recembed import settings as S
    from recembed.calibrate import evaluate_candidate, neighbour_sample_size

    if fixed_corpus is not None:  # walks.enabled / sequences.enabled set
        sp["corpus"] = fixed_corpus
    if amount_set:
        sp["train.target_tokens"] = plan.target_tokens[0]  # 0 = the configured epochs
    split, q = data["split"], vs.queries
    hist = plan.base_blend.history
    # the decay the pruning checkpoints score with: the configured one, else the default
    decay = plan.blend_fixed.get("decay", plan.base_blend.decay)
    probe = _probe_queries(q, prune_queries, hist)

    def objective(trial) -> float:
        t0 = time.perf_counter()
        corpus = _suggest(trial, "corpus", sp["corpus"])
        settings: dict[str, Any] = {"walks.enabled": corpus in ("both", "walks"),
                                    "sequences.enabled": corpus in ("both", "sessions")}
        wp: dict[str, Any] = {}  # the trial's walk settings over the plan's
        if corpus in ("both", "walks"):
            wp["method"] = _suggest(trial, "walks.method", sp["walks.method"])
            settings["walks.method"] = wp["method"]
            if wp["method"] == "node2vec":
                for k in ("p", "q"):
                    wp[k] = _round(float(_suggest(trial, f"walks.{k}", sp[f"walks.{k}"])))
                    settings[f"walks.{k}"] = wp[k]
        tp: dict[str, Any] = {}
        for k in ("window", "vector_size", "negative"):
            tp[k] = int(_suggest(trial, f"train.{k}", sp[f"train.{k}"]))
            settings[f"train.{k}"] = tp[k]
        tp["ns_exponent"] = _round(float(_suggest(trial, "train.ns_exponent",
                                                  sp["train.ns_exponent"])))
        settings["train.ns_exponent"] = tp["ns_exponent"]
        tokens = int(_suggest(trial, "train.target_tokens", sp["train.target_tokens"]))
        if tokens:
            settings["train.target_tokens"] = tokens
        half = float(_suggest(trial, "session.half_life_days", sp["session.half_life_days"]))
        settings["session.half_life_days"] = half
        weights = split.weights(half)
        echo(f"trial {trial.number} (this call: {trial.number - first + 1} of {trials}): "
             f"{corpus} corpus, {tokens:,} tokens" if tokens else
             f"trial {trial.number} (this call: {trial.number - first + 1} of {trials}): "
             f"{corpus} corpus")
        callback = _pruning_callback(trial, probe, decay, hist, data["n_items"], deadline)
        work = A.TUNE_WORK.path(run) / f"trial-{trial.number}"
        work.mkdir(parents=True, exist_ok=True)
        try:
            cand = evaluate_candidate(split.ct, weights, data["n_items"], q, work, plan,
                                      corpus=corpus, tokens=tokens, seed=seed,
                                      threads=threads,
                                      catalog=data["catalog"], listing=vs.listing,
                                      walk_params=replace(plan.walk_params, **wp),
                                      train_params=replace(plan.train_params, **tp),
                                      callbacks=(callback,))
        except Exception as e:
            import optuna

            if isinstance(e, optuna.TrialPruned):
                trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
                why = e.args[0] if e.args else "?"
                echo(f"trial {trial.number}: stopped: the time budget ran out "
                     f"({time.perf_counter() - t0:.1f} s)" if why == TIME_BUDGET else
                     f"trial {trial.number}: pruned at step {why} "
                     f"({time.perf_counter() - t0:.1f} s)")
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        st = cand["choice"].settings
        # the blend was chosen on the post-processed vectors: the final run takes the same
        settings["train.postprocess"] = cand["postprocess"]
        settings["serving.vectors_decay"] = float(cand["vectors_decay"])
        settings.update({f"serving.{k}": v for k, v in S.serving_values(
            st, neighbour_sample_size(st.neighbours)).items()})
        for k, v in {"recall@20": cand["recall@20"], "mrr@20": cand["mrr@20"],
                     "epochs": cand["epochs"], "corpus_tokens": cand["corpus_tokens"],
                     "seconds": round(time.perf_counter() - t0, 3),
                     "signals_alone": cand["choice"].corners, "settings": settings}.items():
            trial.set_user_attr(k, v)
        echo(f"trial {trial.number}: {OBJECTIVE} {cand['objective']:.4f} "
             f"({cand['epochs']} epochs, {time.perf_counter() - t0:.1f} s)")
        return float(cand["objective"])

    return objective


def _probe_queries(q, n: int, history: int) -> dict:
    """The first `n` validation queries as [n, history] ingest codes (-1 padded, most recent
    first) and their targets: what the pruning checkpoints score."""
    m = min(n, len(q))
    pref = np.full((m, history), -1, np.int64)
    for i in range(m):
        s, ln = int(q.start[i]), int(q.length[i])
        recent = q.items[s: s + ln][::-1][:history]
        pref[i, : len(recent)] = recent
    return {"prefix": pref, "target": q.target[:m].astype(np.int64)}


def _pruning_callback(trial, probe: dict, decay: float, history: int, n_items: int,
                      deadline: float | None = None):
    """A gensim epoch-end callback: at each quarter of the epoch schedule, report the
    directional Recall@20 + MRR@20 on the probe queries and prune when the pruner says so;
    past `deadline` (time.monotonic) stop the trial at the next epoch end (pruned, with
    user attribute ``stopped`` = "time budget")."""
    import optuna
    from gensim.models.callbacks import CallbackAny2Vec

    class Report(CallbackAny2Vec):
        def __init__(self):
            self.epoch = 0
            self.quarter = 0
            self.row_of = None

        def on_epoch_end(self, model):
            self.epoch += 1
            if deadline is not None and time.monotonic() > deadline and \
                    self.epoch < model.epochs:
                trial.set_user_attr("stopped", TIME_BUDGET)
                raise optuna.TrialPruned(TIME_BUDGET)
            quarter = (4 * self.epoch) // max(model.epochs, 1)
            if quarter <= self.quarter:
                return
            self.quarter = quarter
            step = 25 * min(quarter, 4)
            value = _directional_score(model, self._rows(model), probe, decay, history)
            trial.report(value, step)
            if step < 100 and trial.should_prune():
                raise optuna.TrialPruned(step)

        def _rows(self, model):
            if self.row_of is None:  # gensim row of each ingest code (-1 = not in the vocab)
                self.row_of = np.full(n_items, -1, np.int64)
                for key, j in model.wv.key_to_index.items():
                    self.row_of[int(key)] = j
            return self.row_of

    return Report()


def _directional_score(model, row_of: np.ndarray, probe: dict, decay: float, history: int,
                       k: int = 20) -> float:
    """Recall@k + MRR@k of `q_in . out` over the whole vocabulary (item being viewed excluded);
    cosine of input vectors where the model has no output vectors (hs)."""
    vin = model.wv.vectors
    out = getattr(model, "syn1neg", None)
    if out is None or not len(out):
        vin = vin / np.maximum(np.linalg.norm(vin, axis=1, keepdims=True), 1e-12)
        out = vin
    pref = probe["prefix"]
    rows = np.where(pref >= 0, row_of[np.maximum(pref, 0)], -1)
    w = (decay ** np.arange(pref.shape[1]))[None, :] * (rows >= 0)
    q_in = np.einsum("nh,nhd->nd", w.astype(np.float32), vin[np.maximum(rows, 0)])
    scores = q_in @ out.T
    last = rows[:, 0]
    has_last = last >= 0
    scores[np.flatnonzero(has_last), last[has_last]] = -np.inf
    tgt = row_of[probe["target"]]
    ok = tgt >= 0
    ts = scores[np.arange(len(tgt)), np.maximum(tgt, 0)]
    # rank = 1 + rows scoring higher + equal rows before the target (the blend's tie rule),
    # so a tie is never a free hit; a query without a known prefix item gets nothing (as in
    # the blend)
    col = np.arange(scores.shape[1])[None, :]
    rank = ((scores > ts[:, None]) | ((scores == ts[:, None]) & (col < tgt[:, None]))).sum(
        axis=1) + 1
    hit = ok & (rows >= 0).any(axis=1) & np.isfinite(ts) & (rank <= k)
    if not len(hit):
        return 0.0
    return float(hit.mean() + np.where(hit, 1.0 / rank, 0.0).mean())


def _trial_row(t) -> dict:
    ua = t.user_attrs
    # a pruned trial's stored value is its last checkpoint (another metric): not shown as one
    value = t.value if t.state.name == "COMPLETE" else None
    return {"number": t.number, "state": t.state.name.lower(), "value": value,
            "recall@20": ua.get("recall@20"), "mrr@20": ua.get("mrr@20"),
            "seconds": ua.get("seconds"), "epochs": ua.get("epochs"), "params": dict(t.params),
            "intermediate": {int(s): float(v) for s, v in t.intermediate_values.items()},
            "settings": ua.get("settings")}


def _round(x: float, digits: int = 4) -> float:
    """Four significant digits: tuned.toml stays readable, and the trial used what it says."""
    if x == 0 or not math.isfinite(x):
        return x
    return float(f"{x:.{digits}g}")


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
