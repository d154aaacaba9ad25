"""`recembed tune` (issue 12): the Optuna study resumes from tune.db, budgets stop it, pruning is
wired to the per-epoch callback, tuned.toml loads through a config include; the include rules."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from recembed.cli import app
from recembed.config import ConfigError, load_config
from recembed.synth import synth_profile, write_synth
from recembed.tune import TuneError, _directional_score, parse_space, tune, tuning_section_html

SMALL = {"train.vector_size": [8], "train.target_tokens": (20_000, 60_000)}


@pytest.fixture(scope="module")
def clicks(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tune") / "clicks.csv"
    write_synth(synth_profile("clicks", 4000, seed=11), path)
    return path


def _cfg(path: Path, tmp: Path, *extra: str):
    return load_config(None, [f"input.paths=['{path}']", "input.categories_path=''",
                              f"run.runs_dir='{tmp}'", "run.progress=false", "run.threads=1",
                              "validation.min_sessions=50", *extra])


def _study(run: Path) -> optuna.Study:
    # read back with optuna's own API, not through recembed.tune
    storage = f"sqlite:///{run / 'tune.db'}"
    (name,) = optuna.study.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.slow  # two studies' worth of trials
def test_a_second_call_adds_trials_to_the_same_study(clicks, tmp_path):
    cfg = _cfg(clicks, tmp_path)
    first = tune(cfg, tmp_path / "run", trials=2, space=SMALL, echo=lambda s: None)
    assert first.added == 2 and (tmp_path / "run" / "tune.db").exists()
    params_1 = [t.params for t in _study(tmp_path / "run").trials]
    second = tune(cfg, tmp_path / "run", trials=2, space=SMALL, echo=lambda s: None)
    study = _study(tmp_path / "run")
    assert second.added == 2 and [t.number for t in study.trials] == [0, 1, 2, 3]
    assert [t.params for t in study.trials[:2]] == params_1
    # the resumed sampler does not replay the first call's draws
    assert [t.params for t in study.trials[2:]] != params_1
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert json.loads((tmp_path / "run" / "tune.json").read_text())["trials"] == 4
    # the run directory holds no scratch corpora afterwards
    assert not (tmp_path / "run" / ".tune-work").exists()


def test_a_resumed_study_on_other_data_is_refused(clicks, tmp_path):
    cfg = _cfg(clicks, tmp_path)
    tune(cfg, tmp_path / "run", trials=1, space=SMALL, echo=lambda s: None)
    with pytest.raises(TuneError, match=r"sample_sessions 0 \(stored\) vs 100"):
        tune(cfg, tmp_path / "run", trials=1, sample_sessions=100, space=SMALL,
             echo=lambda s: None)


@pytest.mark.slow  # a study and a resumed one
def test_a_trial_left_running_is_failed_and_queued_again(clicks, tmp_path):
    cfg = _cfg(clicks, tmp_path)
    tune(cfg, tmp_path / "run", trials=1, space={**SMALL, "corpus": ["both", "sessions"]},
         echo=lambda s: None)
    study = _study(tmp_path / "run")
    stale = study.ask()  # as if the process died mid-trial
    stale.suggest_categorical("corpus", ["both", "sessions"])
    stale.suggest_int("train.window", 1, 10)
    stale_params = dict(stale.params)
    tune(cfg, tmp_path / "run", trials=1, space={**SMALL, "corpus": ["both", "sessions"]},
         echo=lambda s: None)
    trials = _study(tmp_path / "run").trials
    assert trials[1].state == optuna.trial.TrialState.FAIL
    assert trials[2].state == optuna.trial.TrialState.COMPLETE
    assert {k: trials[2].params[k] for k in stale_params} == stale_params


def test_the_time_budget_stops_the_search_and_the_running_trial(clicks, tmp_path):
    cfg = _cfg(clicks, tmp_path, "train.epochs=6")
    t0 = time.perf_counter()
    lines: list[str] = []
    res = tune(cfg, tmp_path / "run", trials=100, time_budget_s=0.01,
               space={"train.vector_size": [8]}, echo=lines.append)
    # the first trial starts, none after the budget, and the running one stops at its first
    # epoch end instead of training all six epochs
    (t,) = _study(tmp_path / "run").trials
    assert res.added == 1 and t.state == optuna.trial.TrialState.PRUNED
    assert t.user_attrs["stopped"] == "time budget" and not t.intermediate_values
    assert "1 of 100 trials" in res.stopped and "1 running trial stopped" in res.stopped
    record = json.loads((tmp_path / "run" / "tune.json").read_text())
    assert record["stopped"] == res.stopped and record["trials_this_call"] == 1
    assert any("started" in ln or "corpus" in ln for ln in lines)  # progress per trial
    assert any("time budget ran out" in ln for ln in lines)
    assert time.perf_counter() - t0 < 60


def test_a_second_tune_on_the_same_run_directory_exits_with_the_lock_code(clicks, tmp_path):
    from recembed import artifacts as A
    from recembed.tune import TuneLocked

    run = tmp_path / "run"
    run.mkdir()
    with A.exclusive_lock(A.TUNE_LOCK.path(run)):  # as a running `tune` holds it
        with pytest.raises(TuneLocked, match="another `recembed tune`"):
            tune(_cfg(clicks, tmp_path), run, trials=1, space=SMALL, echo=lambda s: None)
        r = CliRunner().invoke(app, [
            "tune", "--trials", "1", "--run-dir", str(run),
            "--set", f"input.paths=['{clicks}']", "--set", "input.categories_path=''",
            "--set", "run.progress=false", str(_write_config(tmp_path, clicks))])
    assert r.exit_code == 5, r.output
    assert not (run / "tune.db").exists()  # nothing of the held study was touched


def _write_config(tmp: Path, clicks: Path) -> Path:
    conf = tmp / "job.toml"
    conf.write_text(f'[input]\npaths = ["{clicks}"]\ncategories_path = ""\n')
    return conf


def test_the_printed_include_line_makes_any_config_use_the_tuned_settings(clicks, tmp_path):
    res = tune(_cfg(clicks, tmp_path), tmp_path / "run", trials=1,
               space={**SMALL, "train.window": [7]}, echo=lambda s: None)
    elsewhere = tmp_path / "other" / "dir"
    elsewhere.mkdir(parents=True)
    conf = elsewhere / "nightly.toml"  # nowhere near the run directory
    conf.write_text(res.include_line + f'\n\n[input]\npaths = ["{clicks}"]\n')
    assert load_config(conf).train.window == 7  # default 3


def test_pruning_is_reported_per_epoch_and_stops_a_trial(clicks, tmp_path):
    # no post-processing: the checkpoints score the raw skip-gram vectors, the blend's
    # corners the post-processed ones (compared at the end)
    cfg = _cfg(clicks, tmp_path, "train.epochs=4", "train.postprocess='none'")
    # a pruner that prunes at the first report: any score (<= 2) is below 10
    res = tune(cfg, tmp_path / "run", trials=1, space={"train.vector_size": [8]},
               pruner=optuna.pruners.ThresholdPruner(lower=10.0), echo=lambda s: None)
    (t,) = _study(tmp_path / "run").trials
    assert t.state == optuna.trial.TrialState.PRUNED
    assert list(t.intermediate_values) == [25]  # stopped after epoch 1 of 4
    assert 0.0 < t.intermediate_values[25] <= 2.0
    assert res.tuned_path is None and not (tmp_path / "run" / "tuned.toml").exists()
    # without pruning the same trial reports at every quarter of its 4 epochs
    res = tune(cfg, tmp_path / "run2", trials=1, space={"train.vector_size": [8]},
               pruner=optuna.pruners.NopPruner(), echo=lambda s: None)
    (t,) = _study(tmp_path / "run2").trials
    assert t.state == optuna.trial.TrialState.COMPLETE
    assert sorted(t.intermediate_values) == [25, 50, 75, 100] and t.user_attrs["epochs"] == 4
    # the last checkpoint scores the final model as the blend search's directional corner does
    # (a separate implementation: candidates, normalisation, popularity tie-break)
    alone = t.user_attrs["signals_alone"]["directional"]
    assert t.intermediate_values[100] == pytest.approx(alone["recall@20"] + alone["mrr@20"],
                                                       abs=0.01)


def test_directional_score_by_hand():
    class Model:  # the gensim attributes the checkpoint reads
        class wv:
            vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)

        syn1neg = np.array([[1.0, 0.0], [0.2, 0.0], [0.5, 0.0]], np.float32)

    row_of = np.array([0, 1, 2])
    # query [item 0]: scores out . (1, 0) = 1.0 (item 0, excluded: being viewed), 0.2, 0.5
    # target 1 ranks 2nd, target 2 ranks 1st -> recall 1, mrr (1/2 + 1) / 2
    probe = {"prefix": np.array([[0, -1], [0, -1]]), "target": np.array([1, 2])}
    assert _directional_score(Model, row_of, probe, 0.5, 2) == pytest.approx(1.0 + 0.75)
    # k = 1: only target 2 is a hit
    assert _directional_score(Model, row_of, probe, 0.5, 2, k=1) == pytest.approx(0.5 + 0.5)
    # a prefix without a known item is a miss, not a tie at rank 1
    unknown = np.array([0, 1, -1])
    probe = {"prefix": np.array([[2, -1]]), "target": np.array([1])}
    assert _directional_score(Model, unknown, probe, 0.5, 2) == 0.0
    # ties rank by row: target 2 ties with row 1 (scores 0 . out = 0), so it ranks 2nd
    zero = {"prefix": np.array([[0, -1]]), "target": np.array([2])}

    class Flat(Model):
        syn1neg = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], np.float32)

    assert _directional_score(Flat, row_of, zero, 0.5, 2) == pytest.approx(1.0 + 0.5)


@pytest.mark.slow  # a study, then a run
def test_tuned_toml_loads_through_include_and_changes_the_resolved_config(clicks, tmp_path):
    from recembed.settings import calibration_plan

    cfg = _cfg(clicks, tmp_path)
    res = tune(cfg, tmp_path / "run", trials=2, echo=lambda s: None,
               space={**SMALL, "train.window": [7], "session.half_life_days": [float("inf")]})
    best = _study(tmp_path / "run").best_trial
    conf = tmp_path / "job.toml"
    conf.write_text(f'include = ["{res.tuned_path}"]\n\n[input]\npaths = ["{clicks}"]\n'
                    'categories_path = ""\n\n[train]\nnegative = 3\n')
    out = load_config(conf)
    assert out.train.vector_size == 8 and out.train.window == 7  # defaults 64 and 3
    assert out.session.half_life_days == float("inf")
    assert out.train.negative == 3  # the including file's own key wins
    assert out.train.ns_exponent == pytest.approx(best.params["train.ns_exponent"], rel=1e-3)
    assert out.train.target_tokens == best.params["train.target_tokens"]
    assert out.walks.enabled == (best.params["corpus"] in ("both", "walks"))
    assert isinstance(out.serving.weights, dict) and out.serving.decay != "auto"
    # the exported query's decay, chosen as calibration chooses it
    assert out.serving.vectors_decay == best.user_attrs["settings"]["serving.vectors_decay"]
    assert out.serving.vectors_decay in (0.65, 0.35, 1.0, 0.15)
    assert not calibration_plan(out).searches  # nothing left for the run to calibrate
    assert load_config(conf, ["train.window=4"]).train.window == 4  # --set wins over both


def test_the_cli_prints_the_trials_and_the_tuned_file(clicks, tmp_path):
    r = CliRunner().invoke(app, [
        "tune", "--trials", "2", "--run-dir", str(tmp_path / "run"),
        "--set", f"input.paths=['{clicks}']", "--set", "input.categories_path=''",
        "--set", "run.threads=1", "--set", "run.progress=false",
        "--set", "validation.min_sessions=50", "--space", "train.vector_size=[8]",
        "--space", "train.target_tokens=20000..40000", str(_empty_config(tmp_path))])
    assert r.exit_code == 0, r.output
    assert "objective" in r.output and "complete" in r.output
    assert str(tmp_path / "run" / "tuned.toml") in r.output
    bad = CliRunner().invoke(app, ["tune", "--space", "train.windw=3",
                                   str(_empty_config(tmp_path))])
    assert bad.exit_code == 2 and "train.windw" in bad.output


def _empty_config(tmp: Path) -> Path:
    p = tmp / "empty.toml"
    p.write_text("")
    return p


@pytest.mark.slow  # a study of several trials
def test_tuning_section_html(clicks, tmp_path):
    assert tuning_section_html(tmp_path) == ""
    cfg = _cfg(clicks, tmp_path)
    tune(cfg, tmp_path / "run", trials=3, space=SMALL, echo=lambda s: None)
    h = tuning_section_html(tmp_path / "run")
    assert h.count('src="data:image/png;base64,') == 2  # objective per trial, importances
    assert "Parameter importances" in h and "train.window" in h and "3 trials" in h
    assert "http" not in h  # self-contained


def test_parse_space():
    assert parse_space(["train.window=2..6", "train.vector_size=[32, 64]", "walks.p=0.5..2.0",
                        "corpus=sessions"]) == {
        "train.window": (2, 6), "train.vector_size": [32, 64], "walks.p": (0.5, 2.0),
        "corpus": "sessions"}
    with pytest.raises(TuneError, match="key=value"):
        parse_space(["train.window"])


# ---------------------------------------------------------------- config include


def _write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_include_merges_under_the_files_own_keys(tmp_path):
    _write(tmp_path / "a.toml", '[train]\nwindow = 7\nnegative = 4\n[serving]\n'
                                'weights = {rules = 1.0, repeat = 0.5}\n')
    _write(tmp_path / "b.toml", "[train]\nnegative = 6\n")
    main = _write(tmp_path / "main.toml", 'include = ["a.toml", "b.toml"]\n[train]\n'
                                          'vector_size = 16\n[serving]\nweights = {cosine = 1.0}\n')
    cfg = load_config(main)
    assert (cfg.train.window, cfg.train.negative, cfg.train.vector_size) == (7, 6, 16)
    assert cfg.serving.weights == {"cosine": 1.0}  # a table value is replaced, not mixed
    assert load_config(main, ["train.window=2"]).train.window == 2


def test_include_paths_are_relative_to_the_including_file(tmp_path):
    _write(tmp_path / "conf" / "sub" / "t.toml", "[train]\nwindow = 9\n")
    _write(tmp_path / "conf" / "inner.toml", 'include = ["sub/t.toml"]\n')
    main = _write(tmp_path / "conf" / "main.toml", 'include = ["inner.toml"]\n')
    assert load_config(main).train.window == 9


def test_an_unknown_key_in_an_included_file_names_that_file(tmp_path):
    _write(tmp_path / "tuned.toml", "[train]\nwindw = 5\n")
    main = _write(tmp_path / "main.toml", 'include = ["tuned.toml"]\n')
    with pytest.raises(ConfigError, match=r"tuned\.toml.*unknown config key 'train\.windw'.*"
                                          r"did you mean 'train\.window'"):
        load_config(main)


def test_include_errors(tmp_path):
    main = _write(tmp_path / "main.toml", 'include = ["missing.toml"]\n')
    with pytest.raises(ConfigError, match=r"missing\.toml does not exist"):
        load_config(main)
    _write(tmp_path / "x.toml", 'include = ["y.toml"]\n')
    _write(tmp_path / "y.toml", 'include = ["x.toml"]\n')
    with pytest.raises(ConfigError, match="include cycle"):
        load_config(tmp_path / "x.toml")
    _write(tmp_path / "bad.toml", "include = 3\n")
    with pytest.raises(ConfigError, match="list of file paths"):
        load_config(tmp_path / "bad.toml")


def test_a_shadowed_included_key_is_logged(tmp_path, caplog):
    _write(tmp_path / "tuned.toml", "[train]\nwindow = 5\n")
    main = _write(tmp_path / "main.toml", 'include = ["tuned.toml"]\n[train]\nwindow = 3\n')
    with caplog.at_level("WARNING", logger="recembed"):
        assert load_config(main).train.window == 3
    assert "train.window" in caplog.text



def test_a_catalog_run_tunes_on_cold_targets_and_the_category_signal(tmp_path):
    """As calibration does (`recembed.calibrate.validation_set`): targets listed in the catalog
    but unseen by calibration training are scored, and the `category` signal is a corner of
    every trial's blend search."""
    from recembed.synth import synth_catalog

    ev, items = write_synth(synth_catalog(6000, seed=3), tmp_path / "clicks.csv")
    cfg = load_config(None, [
        f"input.paths=['{ev}']", f"input.catalog.path='{items}'",
        "input.catalog.attributes=['category']", "input.catalog.category='category'",
        "input.catalog.listed='listed_at'", f"run.runs_dir='{tmp_path}'", "run.progress=false",
        "run.threads=1", "validation.min_sessions=50"])
    tune(cfg, tmp_path / "run", trials=1, space=SMALL, echo=lambda s: None)
    record = json.loads((tmp_path / "run" / "tune.json").read_text())
    assert record["validation_queries"]["cold_queries"] > 0
    (trial,) = _study(tmp_path / "run").trials
    assert "category" in trial.user_attrs["signals_alone"]
