"""A thin wrapper over gensim Word2Vec (skip-gram, negative sampling) trained in corpus_file mode,
and the vector exports (npy + Parquet ids, word2vec text and binary).

Loss: gensim's running loss is a float32 that stops growing near 2**24..2**27 (gensim #2735), so
the callback reads it at each epoch end and resets it to zero: what we report is the per-epoch
loss, never the saturated cumulative one.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recembed.artifacts import VECTORS_BIN, VECTORS_TXT, Artifact, Embeddings
from recembed.progress import progress_bar

log = logging.getLogger("recembed")


class EmptyVocabulary(ValueError):
    """No item reaches min_count in the corpus."""


@dataclass
class TrainResult:
    """Input vectors [n, dim] float32, output (context) vectors or None, and the item code of each
    row (int32, ascending); `stats` holds per-epoch loss, tokens, seconds and words/s."""

    vectors: np.ndarray
    context: np.ndarray | None
    codes: np.ndarray
    counts: np.ndarray
    stats: dict = field(default_factory=dict)
    # tokens of the corpus that are not item codes (catalog attribute tokens, the cold-start
    # "context" scheme): token -> (input vector, output vector or None)
    side: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrainParams:
    """The skip-gram settings of `train_word2vec` that come from `[train]`
    (`recembed.settings.train_params`); the parameters are documented there, by name.
    `epochs` is 1 when the training amount decides (train.epochs = "auto", see `target_tokens`
    of `train_word2vec`)."""

    vector_size: int = 64
    window: int = 3
    shrink_windows: bool = True
    negative: int = 10
    ns_exponent: float = 0.5
    sample: float = 0.0
    alpha: float = 0.05
    min_alpha: float = 0.0001
    min_count: int = 1
    hs: bool = False
    workers: int = 1
    max_tokens: int = 0
    epochs: int = 20

    def kwargs(self) -> dict:
        """The settings as `train_word2vec` keyword arguments."""
        return asdict(self)


def stable_hash(s: str) -> int:
    """A process-independent string hash for gensim's vector seeding (Python's `hash` is salted
    per process, which would make 'same seed, same vectors' false across runs)."""
    return zlib.crc32(s.encode())


def train_word2vec(
    corpus_file: str | Path,
    *,
    vector_size: int = 64,
    window: int = 3,
    shrink_windows: bool = True,
    negative: int = 10,
    ns_exponent: float = 0.5,
    sample: float = 0.0,
    epochs: int = 20,
    alpha: float = 0.05,
    min_alpha: float = 0.0001,
    min_count: int = 1,
    hs: bool = False,
    workers: int = 1,
    seed: int = 42,
    max_tokens: int = 0,
    target_tokens: int = 0,
    init: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
    progress: bool = False,
    callbacks: tuple = (),
    side_corpus: str | Path | None = None,
    side_tokens: int = 0,
    train_file: str | Path | None = None,
) -> TrainResult:
    """Train skip-gram Word2Vec on a corpus file of item-code lines (gensim corpus_file mode).

    Parameters
    ----------
    corpus_file : str or Path
        Text file, one sentence per line, tokens = non-negative integer item codes separated
        by spaces (as `recembed.sequences` and `recembed.walks` write them). Must not be empty.
    vector_size : int >= 2
        Embedding dimension.
    window : int >= 1, tokens
        Maximum skip-gram context distance.
    shrink_windows : bool
        Sample the effective window uniformly in 1..window per token (gensim's default).
    negative : int >= 0
        Negative samples per positive pair; 0 = no negative sampling (then `hs` must be on,
        and no context vectors are trained).
    ns_exponent : float
        Exponent of the negative-sampling distribution (count ** ns_exponent); 0.5 suits
        click logs, 0.75 is the NLP default.
    sample : float >= 0
        Down-sampling threshold of frequent tokens; 0 = off.
    epochs : int >= 1
        Passes over the corpus (lowered by `max_tokens`).
    alpha, min_alpha : float > 0, >= 0
        Initial and final learning rate (linear decay).
    min_count : int >= 1
        Ignore items seen fewer times in the corpus (they get no vector).
    hs : bool
        Hierarchical softmax instead of (or with) negative sampling.
    workers : int >= 1
        gensim threads; results are reproducible only with 1.
    seed : int
        Seed of the initial vectors and of gensim's sampling.
    target_tokens : int >= 0, tokens
        > 0: train about target_tokens / corpus tokens epochs (`epochs_for`) instead of
        `epochs` (DESIGN.md: the training amount, not the epoch count, decides quality).
    max_tokens : int >= 0
        Cap on corpus tokens x epochs: above it fewer epochs are trained (at least 1), so a
        nightly run's training time stays bounded as the log grows; 0 = no cap.
    init : (codes, vectors, context or None), optional
        Warm start: rows for item codes (int) present in the corpus start from these vectors
        (float32 [n, vector_size]); `stats["warm_started"]` counts them.
    progress : bool
        Show a per-epoch progress bar.
    callbacks : sequence of gensim CallbackAny2Vec
        Run after the loss callback at each epoch end (`recembed.tune` evaluates and prunes
        there; an exception raised in one stops training).
    side_corpus : str or Path, optional
        Side-information sentences (`recembed.catalog.write_side_sentences`: an item code and
        its attribute tokens per line), trained after the items in the same model with every
        item's vectors held fixed (input vectors locked, output vectors restored after each
        epoch): attribute tokens learn the item space without moving it, so the items' vectors
        are exactly those trained without side information. Returned in `TrainResult.side`.
    side_tokens : int
        Tokens in `side_corpus`. Its passes: as many as the items had, capped so that it trains
        at most as many tokens as the items did (at least one pass).
    train_file : str or Path, optional
        Incremental training (`recembed.incremental`): the vocabulary, its counts and the
        epochs (`target_tokens` / tokens of `corpus_file`) come from `corpus_file`, as in a
        full training, but the passes run over this smaller corpus (the new sessions and a
        replay sample), so training costs its share of the tokens. Default: `corpus_file`.

    Returns
    -------
    TrainResult
        `vectors` [n_items, vector_size] float32 in ascending code order, `codes`, `counts`,
        `context` (output vectors; None without negative sampling) and `stats`: vocab,
        corpus_tokens, train_corpus_tokens (of `train_file`), epochs, epochs_requested,
        tokens_trained, vocab_seconds, train_seconds, words_per_s, warm_started,
        loss_per_epoch (reset every epoch).

    Examples
    --------
    >>> import tempfile
    >>> corpus = Path(tempfile.mkdtemp()) / "c.txt"
    >>> _ = corpus.write_text("0 1 2 3\\n3 2 1 0\\n" * 50)
    >>> res = train_word2vec(corpus, vector_size=8, epochs=2, workers=1, seed=1)
    >>> res.vectors.shape, res.codes.tolist()
    ((4, 8), [0, 1, 2, 3])
    """
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    corpus_file = str(corpus_file)
    if Path(corpus_file).stat().st_size == 0:
        raise ValueError(f"training corpus {corpus_file} is empty")
    losses: list[float] = []
    bar = progress_bar(epochs, progress, unit="epoch", desc="train")

    class EpochLoss(CallbackAny2Vec):
        def on_epoch_end(self, model):
            losses.append(float(model.get_latest_training_loss()))
            model.running_training_loss = 0.0  # float32 accumulator: reset every epoch
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4g}")

    kwargs = dict(
        vector_size=vector_size, window=window, shrink_windows=shrink_windows, sg=1,
        negative=negative, ns_exponent=ns_exponent, sample=sample, alpha=alpha,
        min_alpha=min_alpha, min_count=min_count, hs=int(hs), workers=max(1, workers),
        seed=seed, hashfxn=stable_hash, epochs=epochs,
    )
    model = Word2Vec(**kwargs)
    t0 = time.perf_counter()
    model.build_vocab(corpus_file=corpus_file)
    t_vocab = time.perf_counter() - t0
    if not model.wv.key_to_index:
        raise EmptyVocabulary(f"min_count={min_count} is above the corpus count of every item: "
                              "nothing left to train")
    if max_tokens > 0 and model.corpus_total_words > max_tokens:
        # one pass is already over budget: train on the corpus's first max_tokens tokens (whole
        # lines), so the budget holds whatever the corpus (benchmarks/RESULTS.md: a log of
        # rare items made a corpus too big to train in time)
        log.warning("train.max_tokens=%s: the corpus has %s tokens, more than one pass allows; "
                    "training on its first %s", f"{max_tokens:,}",
                    f"{model.corpus_total_words:,}", f"{max_tokens:,}")
        corpus_file = _head(corpus_file, max_tokens)
        model = Word2Vec(**kwargs)
        model.build_vocab(corpus_file=corpus_file)
        if not model.wv.key_to_index:
            raise EmptyVocabulary(f"min_count={min_count} is above the corpus count of every "
                                  "item: nothing left to train")
    if target_tokens > 0:
        epochs = epochs_for(model.corpus_total_words, target_tokens)
    requested = epochs
    train_path, train_words = corpus_file, int(model.corpus_total_words)
    if train_file is not None:
        from recembed.incremental import count_tokens

        train_path, train_words = str(train_file), count_tokens(train_file)
        if train_words == 0:
            raise ValueError(f"training corpus {train_file} is empty")
    if max_tokens > 0 and train_words * epochs > max_tokens:
        epochs = max(1, int(max_tokens // train_words))
        log.warning("train.max_tokens=%s: %s corpus tokens x %d epochs is over budget; training "
                    "%d epochs", f"{max_tokens:,}", f"{train_words:,}", requested, epochs)
        if bar is not None:
            bar.total = epochs
    warm = _warm_start(model, *init) if init is not None else 0
    t1 = time.perf_counter()
    model.train(corpus_file=train_path, total_words=train_words, epochs=epochs,
                compute_loss=True, callbacks=[EpochLoss(), *callbacks])
    t_train = time.perf_counter() - t1
    if bar is not None:
        bar.close()

    is_item = np.array([k.isdigit() for k in model.wv.index_to_key], dtype=bool)
    keys = np.array([int(k) if ok else -1 for k, ok in zip(model.wv.index_to_key, is_item,
                                                             strict=True)], dtype=np.int64)
    has_ctx = negative > 0 and getattr(model, "syn1neg", None) is not None
    order = np.flatnonzero(is_item)[np.argsort(keys[is_item], kind="stable")]
    vectors = np.ascontiguousarray(model.wv.vectors[order], dtype=np.float32)
    context = None
    if has_ctx:
        context = np.ascontiguousarray(model.syn1neg[order], dtype=np.float32)
    counts = np.array([model.wv.get_vecattr(k, "count") for k in model.wv.index_to_key])[order]
    tokens = train_words * epochs
    stats = {
        "vocab": len(order), "corpus_tokens": int(model.corpus_total_words),
        "train_corpus_tokens": train_words, "epochs": epochs,
        "epochs_requested": requested,
        "tokens_trained": tokens, "vocab_seconds": round(t_vocab, 3),
        "train_seconds": round(t_train, 3),
        "words_per_s": round(tokens / t_train) if t_train else 0,
        "warm_started": warm,
        "loss_per_epoch": losses,
    }
    side = {}
    if side_corpus is not None and side_tokens > 0:
        side_epochs = max(1, min(epochs, tokens // side_tokens))
        t2 = time.perf_counter()
        side = _train_side_tokens(model, str(side_corpus), side_tokens, side_epochs, has_ctx)
        stats.update(side_vocab=len(side), side_epochs=side_epochs,
                     side_seconds=round(time.perf_counter() - t2, 3))
    return TrainResult(vectors, context, keys[order].astype(np.int32), counts.astype(np.int64),
                       stats, side)


def _train_side_tokens(model, path: str, tokens: int, epochs: int, has_ctx: bool) -> dict:
    """Add the side corpus's new tokens to a trained model and train them with the items held
    fixed; {token: (input vector, output vector or None)} of the new tokens."""
    from gensim.models.callbacks import CallbackAny2Vec

    n_items = len(model.wv)
    model.build_vocab(corpus_file=path, update=True)
    # gensim's lockf scales each input-vector update: 0 keeps the items' input vectors as
    # trained. Output vectors have no lock: the items' are put back after every pass, so the
    # attribute tokens always learn against the items' own output vectors.
    lockf = np.ones(len(model.wv), dtype=np.float32)
    lockf[:n_items] = 0.0
    model.wv.vectors_lockf = lockf
    saved = model.syn1neg[:n_items].copy() if has_ctx else None

    class Restore(CallbackAny2Vec):
        def on_epoch_end(self, m):
            if saved is not None:
                m.syn1neg[:n_items] = saved

    model.train(corpus_file=path, total_words=tokens, epochs=epochs, callbacks=[Restore()])
    model.wv.vectors_lockf = np.ones(1, dtype=np.float32)
    return {k: (model.wv.vectors[j].copy(), model.syn1neg[j].copy() if has_ctx else None)
            for j, k in enumerate(model.wv.index_to_key) if j >= n_items}


def _head(path: str, max_tokens: int) -> str:
    """A copy of the corpus's first lines holding at most `max_tokens` tokens (beside it)."""
    out = f"{path}.head"
    n = 0
    with open(path, "rb") as src, open(out, "wb") as dst:
        for line in src:
            n += line.count(b" ") + 1
            if n > max_tokens:
                break
            dst.write(line)
    return out


def epochs_for(corpus_tokens: int, target_tokens: int, *, lo: int = 1, hi: int = 500) -> int:
    """Epochs so that corpus tokens x epochs is about `target_tokens`, in [lo, hi].

    DESIGN.md: winners saw about 2-3M training tokens whatever the corpus; a fixed epoch count
    is wrong for most logs (DIGINETICA's 9.8k-token corpus: 25 / 100 epochs gave R@20 .02 / .48).
    """
    if corpus_tokens <= 0:
        return lo
    return int(min(max(round(target_tokens / corpus_tokens), lo), hi))


def export_vectors(
    result: TrainResult, vocabulary: pd.DataFrame, out_dir: str | Path, *, context: bool = True,
    text: bool = True, categories: np.ndarray | None = None, ids: np.ndarray | None = None,
    origin: np.ndarray | None = None,
) -> list[Artifact]:
    """Write a training result as `Embeddings` (vectors.npy, items.parquet and, when `context`
    and trained, context_vectors.npy) plus word2vec binary (vectors.bin) and text (vectors.txt)
    files keyed by original ids.

    Parameters
    ----------
    result : TrainResult
        What `train_word2vec` returned.
    vocabulary : pandas.DataFrame
        The run's vocabulary: `id` (original item id) of each ingest `code` (row i = code i).
    out_dir : str or Path
        Destination directory.
    context : bool
        Also write the output (context) vectors.
    text : bool
        Also write the word2vec text format.
    categories : numpy.ndarray of int, optional
        Category of each ingest code (-1 = unknown), stored in items.parquet.
    ids : numpy.ndarray of str, optional
        Original id of each row, for rows whose code is beyond the vocabulary (catalog items
        never seen in the log); default: the vocabulary's id of each code.
    origin : numpy.ndarray of str, optional
        Origin of each row (`recembed.catalog.ORIGINS`), stored in items.parquet.

    Returns
    -------
    list of Artifact
        What was written. In items.parquet row i is vector row i and `code` is the ingest code.
    """
    out_dir = Path(out_dir)
    if ids is None:
        ids = vocabulary["id"].astype(str).to_numpy()[result.codes]
    emb = Embeddings(ids=ids, codes=result.codes, vectors=result.vectors,
                     context=result.context if context else None, counts=result.counts,
                     categories=None if categories is None else np.asarray(categories)[
                         result.codes], origin=origin)
    written = emb.save(out_dir)
    write_word2vec(list(ids), result.vectors, VECTORS_BIN.path(out_dir), binary=True)
    written.append(VECTORS_BIN)
    if text:
        write_word2vec(list(ids), result.vectors, VECTORS_TXT.path(out_dir), binary=False)
        written.append(VECTORS_TXT)
    return written


def write_word2vec(ids: list[str], vectors: np.ndarray, path: str | Path, binary: bool) -> None:
    """Write vectors in word2vec format keyed by `ids`, in row order.

    Parameters
    ----------
    ids : list of str
        Original item id of each row. The format ends a key at whitespace, so keys are
        escaped: every whitespace character and '%' is written as the %XX escapes of its UTF-8
        bytes (`"a b"` -> `"a%20b"`, `"5%"` -> `"5%25"`); `urllib.parse.unquote(key)` gives
        the id back byte for byte. items.parquet always holds the ids unescaped.
    vectors : numpy.ndarray of float32, shape (n, dim)
        One row per id.
    path : str or Path
        Destination file.
    binary : bool
        word2vec binary (True) or text (False); gensim's `load_word2vec_format` reads both.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "v.txt"
    >>> write_word2vec(["a", "b"], np.eye(2, dtype=np.float32), p, binary=False)
    >>> p.read_text().splitlines()[0]
    '2 2'
    """
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vectors.shape[1], dtype=np.float32)
    kv.add_vectors([word2vec_key(i) for i in ids], vectors)
    # equal counts keep the rows in our order (gensim sorts by count when writing)
    kv.allocate_vecattrs(["count"], [np.int64])
    kv.save_word2vec_format(str(path), binary=binary)


def word2vec_key(item_id: str) -> str:
    """The key of `item_id` in the word2vec exports (see `write_word2vec`)."""
    if "%" not in item_id and not any(c.isspace() for c in item_id):
        return item_id
    from urllib.parse import quote

    return "".join(quote(c, safe="") if c == "%" or c.isspace() else c for c in item_id)


def concat_corpora(paths: list[Path], out: Path) -> Path:
    """One corpus file from several (gensim's corpus_file mode takes a single file): `paths[0]`
    itself when there is one, else their concatenation written to `out`."""
    if len(paths) == 1:
        return paths[0]
    import shutil

    with open(out, "wb") as dst:
        for p in paths:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 24)
    return out


def _warm_start(model, codes: np.ndarray, vectors: np.ndarray, context: np.ndarray | None
                ) -> int:
    idx = model.wv.key_to_index
    hit = 0
    for row, code in enumerate(codes):
        j = idx.get(str(int(code)))
        if j is not None:
            model.wv.vectors[j] = vectors[row]
            if context is not None and getattr(model, "syn1neg", None) is not None:
                model.syn1neg[j] = context[row]
            hit += 1
    log.info("warm start: %d of %d items initialised from the previous version", hit,
             len(model.wv))
    return hit
