"""Incremental nights (`train.mode = "incremental"`): continue from the current published
version instead of retraining from scratch.

An incremental night builds the skip-gram's vocabulary (and its counts, hence the negative
sampling distribution) over the whole corpus of the run, exactly as a full training does, so
new items join the vocabulary and items that left the run's data are not in it (nothing stale
is served: the written vectors are the model's rows only). It then starts every item the
previous version trained from that version's input and output (context) vectors and trains,
with the epochs a full training of the whole corpus would run (a version published without
context vectors, `train.export_context_vectors = false`, continues its input vectors only),
on a smaller corpus: the
sessions that end after the previous version's data end, every older session holding an item
the previous version did not train, and a seeded `replay_share` of the other older sessions
(against forgetting). Walk lines, when the walks corpus is trained, are kept in the same
proportion as the sessions (a seeded draw per line).

A full retrain runs instead when `mode` is "full", when nothing is published, when the
previous version cannot be continued (other corpus or model, LINE, another dimension, a
post-processing other than none, no record of its data end), when no
session ends after its data end, or when the last full training behind it is
`full_every_days` or more of data time (session end times, never the clock) older than this
run's data. `ModeDecision` says which ran and why; the train stage writes it into train.json,
its stage statistics, metrics.json (`train`) and the version's manifest (`training`).

Measured (`benchmarks/incremental.py`, `benchmarks/RESULTS.md`, "incremental nights"; synth
clicks and music logs, 150k events, 5 nights each against a full retrain of the same night on
the same holdout queries): an incremental night trains 15-18% of the tokens in 12-39% of the
train stage's time, and its neighbour lists move far less from night to night (overlap@10 with
the previous night 0.77-0.85 against 0.42-0.59). Its quality is not a tie everywhere: on music
`recommend` loses 0.014-0.017 Recall@20 (about 4 paired standard errors) every night, on clicks
the first incremental night loses 0.004-0.009 (1-2 SE) while later nights tie or win. With
replay_share 0.3 the music vectors alone tie, `recommend` still loses (possibly because the
continued vectors' norms grow each night under the blend's fixed temperature: not tested). So
the default stays `train.mode = "full"`; incremental is an option for logs where this replay
shows a tie.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recembed import artifacts as A

log = logging.getLogger("recembed")

DAY = 86_400

# the train statistics a version's manifest carries under "training" (recembed.publish)
TRAINING_KEYS = ("mode", "mode_requested", "mode_reason", "previous_version", "data_end",
                 "last_full_end", "incremental_sessions", "replayed_sessions", "new_items")


@dataclass(frozen=True)
class IncrementalParams:
    """`[train]`'s incremental keys and the run's seed (`recembed.settings.incremental_params`).

    Parameters
    ----------
    mode : {"full", "incremental"}
        What the config asks for.
    full_every_days : float > 0, days of data time
        A full retrain when the last full training is this old or older.
    replay_share : float in [0, 1]
        Share of the older sessions replayed on an incremental night.
    seed : int
        The run's seed (the replay sample's and the walk lines' draws).
    """

    mode: str = "full"
    full_every_days: float = 7.0
    replay_share: float = 0.1
    seed: int = 0


@dataclass
class PreviousModel:
    """What an incremental night needs of the previous published version.

    Parameters
    ----------
    version : str
        Its folder name.
    model : str
        What its vectors were trained on (`recembed.settings.model_name`).
    dimension : int
        Width of its vectors.
    postprocess : str
        Its post-processing spec ("none" = the raw skip-gram space).
    data_end, last_full_end : int or None, unix seconds
        The newest training session end behind it and that of the last full training behind
        it; None for a version published before `train.mode` existed.
    codes : numpy.ndarray of int64
        This run's ingest code of each of its trained rows that this run knows.
    vectors, context : numpy.ndarray of float32, shape (len(codes), dimension)
        Their input and output vectors (context None when it has none).
    """

    version: str
    model: str
    dimension: int
    postprocess: str
    data_end: int | None
    last_full_end: int | None
    codes: np.ndarray
    vectors: np.ndarray
    context: np.ndarray | None


@dataclass(frozen=True)
class ModeDecision:
    """Which training ran and why.

    Parameters
    ----------
    mode : {"full", "incremental"}
        What ran.
    reason : str
        Why, in words (logged, and recorded in train.json / metrics.json / the manifest).
    previous : str or None
        The version continued from (incremental) or considered (full), if any.
    last_full_end : int, unix seconds
        The data end of the last full training behind this run's vectors: this run's
        `data_end` after a full training, the previous version's after an incremental one.
    """

    mode: str
    reason: str
    previous: str | None
    last_full_end: int


def load_previous(version_dir: Path | None, vocabulary: pd.DataFrame) -> PreviousModel | None:
    """The previous version's record and trained vectors, or None when there is none.

    Parameters
    ----------
    version_dir : pathlib.Path or None
        The version folder (`artifacts.PreviousVersion.version_dir`).
    vocabulary : pandas.DataFrame
        This run's vocabulary (`code`, `id`): the version's rows are matched by id; rows this
        run has never seen, and cold-start rows (origin other than "trained"), are dropped.

    Returns
    -------
    PreviousModel or None
    """
    if version_dir is None:
        return None
    from recembed.postprocess import VectorTransform

    manifest = json.loads((version_dir / A.MANIFEST).read_text())
    training = manifest.get("training") or {}
    emb = A.Embeddings.load(version_dir)
    tpath = A.POSTPROCESS.path(version_dir)
    spec = "none"
    if tpath.exists() and not (tf := VectorTransform.load(tpath)).identity:
        spec = tf.spec
    keep = np.ones(len(emb), bool) if emb.origin is None else \
        np.asarray(emb.origin).astype(str) == "trained"
    code_of = pd.Series(vocabulary["code"].to_numpy(), index=vocabulary["id"].astype(str))
    codes = code_of.reindex([str(x) for x in emb.ids]).fillna(-1).to_numpy().astype(np.int64)
    keep &= codes >= 0

    def ts(key: str) -> int | None:
        v = training.get(key)
        return None if v is None else int(v)

    return PreviousModel(
        version=version_dir.name, model=str(manifest.get("model", "")),
        dimension=int(emb.vectors.shape[1]), postprocess=spec, data_end=ts("data_end"),
        last_full_end=ts("last_full_end"), codes=codes[keep], vectors=emb.vectors[keep],
        context=None if emb.context is None else emb.context[keep])


def decide(params: IncrementalParams, previous: PreviousModel | None, *, data_end: int,
           model: str, vector_size: int) -> ModeDecision:
    """Full or incremental training for this run, and why.

    Parameters
    ----------
    params : IncrementalParams
        The config's mode and schedule.
    previous : PreviousModel or None
        The previous published version (`load_previous`).
    data_end : int, unix seconds
        The newest end of this run's training sessions.
    model : str
        What this run trains on (`recembed.settings.model_name`).
    vector_size : int
        This run's `train.vector_size`.

    Returns
    -------
    ModeDecision
    """
    def full(reason: str) -> ModeDecision:
        return ModeDecision("full", reason, previous.version if previous else None, data_end)

    if params.mode == "full":
        return full('train.mode = "full"')
    if previous is None:
        return full("no version is published in publish.dir yet")
    v = previous.version
    if previous.data_end is None or previous.last_full_end is None:
        return full(f"version {v} records no training data end (published before train.mode)")
    if "line" in previous.model.split("+"):
        return full(f"version {v} holds LINE vectors ({previous.model}): incremental training "
                    "continues skip-gram vectors only")
    if previous.model != model:
        return full(f"version {v} was trained on {previous.model}, this run trains on {model}: "
                    "another corpus")
    if previous.dimension != vector_size:
        return full(f"version {v} has {previous.dimension} dimensions, train.vector_size is "
                    f"{vector_size}")
    if previous.postprocess != "none":
        return full(f"version {v} was post-processed ({previous.postprocess}): not a skip-gram "
                    "space to continue from")
    if data_end <= previous.data_end:
        return full(f"no training session ends after version {v}'s data end")
    age = (data_end - previous.last_full_end) / DAY
    if age >= params.full_every_days:
        return full(f"scheduled: the last full training behind version {v} is {age:.2f} days "
                    f"of data older than this run's data (train.full_every_days = "
                    f"{params.full_every_days:g})")
    note = "" if previous.context is not None else \
        " (it has no context vectors: the output vectors start afresh)"
    return ModeDecision("incremental", f"continuing version {v}{note}: the last full training "
                        f"is {age:.2f} days of data old (< train.full_every_days = "
                        f"{params.full_every_days:g})", v, previous.last_full_end)


def replay_sample(n: int, share: float, seed: int) -> np.ndarray:
    """Which of `n` older sessions are replayed: round(share * n) of them, drawn without
    replacement from a stream seeded by `seed` alone.

    Parameters
    ----------
    n : int >= 0
        Older sessions, in a fixed order (by session id).
    share : float in [0, 1]
        Share replayed.
    seed : int
        The run's seed.

    Returns
    -------
    numpy.ndarray of int64
        Ascending positions in 0..n-1.
    """
    k = round(share * n)
    rng = np.random.default_rng([int(seed), 0x1C2])  # its own stream, whatever else uses seed
    return np.sort(rng.permutation(n)[:k]).astype(np.int64)


def select_sessions(sessions: pd.DataFrame, table: pd.DataFrame, since: int,
                    known: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, dict]:
    """The training sessions of an incremental night.

    Parameters
    ----------
    sessions : pandas.DataFrame
        `session`, `item` (ingest code): the run's training sessions.
    table : pandas.DataFrame
        The session table (`session`, `end` unix seconds, `split`; holdout rows, split 1, are
        ignored).
    since : int, unix seconds
        The previous version's data end: sessions ending after it are new.
    known : numpy.ndarray of int
        Ingest codes the previous version trained: an older session holding any other item
        is taken whole (its items need training from scratch).
    share : float in [0, 1]
        Replay share of the other older sessions (`replay_sample`).
    seed : int
        The run's seed.

    Returns
    -------
    (numpy.ndarray of int64, dict)
        The session ids kept (ascending) and counts: incremental_sessions (new),
        replayed_sessions, new_item_sessions, older_sessions.
    """
    t = table.loc[table["split"] != 1, ["session", "end"]].sort_values("session")
    ids = t["session"].to_numpy(np.int64)
    new = t["end"].to_numpy() > since
    unknown = ~np.isin(sessions["item"].to_numpy(), np.asarray(known))
    with_new_item = np.isin(ids, np.unique(sessions["session"].to_numpy()[unknown]))
    forced = with_new_item & ~new
    old = np.flatnonzero(~new & ~forced)
    replay = old[replay_sample(len(old), share, seed)]
    keep = new | forced
    keep[replay] = True
    return ids[keep], {"incremental_sessions": int(new.sum()),
                       "replayed_sessions": len(replay),
                       "new_item_sessions": int(forced.sum()),
                       "older_sessions": int((~new).sum())}


def sample_lines(src: str | Path, dst: str | Path, share: float, seed: int) -> int:
    """Copy a seeded `share` of the lines of `src` (each kept on its own draw) to `dst`.

    Parameters
    ----------
    src, dst : str or pathlib.Path
        Corpus files (one sentence per line).
    share : float in [0, 1]
        Probability of keeping each line.
    seed : int
        The run's seed: the same file, share and seed keep the same lines.

    Returns
    -------
    int
        Lines written.
    """
    rng = np.random.default_rng([int(seed), 0x1C3])
    kept = 0
    with open(src, "rb") as f, open(dst, "wb") as out:
        while True:
            lines = f.readlines(1 << 22)
            if not lines:
                break
            take = rng.random(len(lines)) < share
            out.writelines(line for line, ok in zip(lines, take, strict=True) if ok)
            kept += int(take.sum())
    return kept


def count_tokens(path: str | Path) -> int:
    """Tokens (space-separated) in a corpus file."""
    n = 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                n += line.count(b" ") + 1
    return n
