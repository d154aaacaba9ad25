"""The one id rule of recembed (README, "Item ids"): how an item, user or session id read from
any input (log, catalog, categories file) or given to serving becomes the text the vocabulary,
`items.parquet` and the word2vec exports hold. Light on purpose: the serving loader imports it
for `normalize_id` (one query id, the standard library only); pyarrow and its compute module load
with the first column rule (`normalize_ids`, `integral_text_key`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

# text ids that read as an integer: digits with an optional sign and an all-zero fraction
_INTEGRAL_TEXT = r"^[+-]?[0-9]+(\.0*)?$"
_INTEGRAL_FLOAT_TEXT = r"^[+-]?[0-9]+\.0+$"
# ASCII text that Python's str.isspace calls whitespace (tab, line feed, VT, FF, CR, FS-US, space)
_ASCII_BLANK = r"^[\t\n\x0b\x0c\r\x1c-\x1f ]+$"
# float64 holds every integer up to 2**53 exactly; a float id above it was rounded when written
MAX_EXACT_FLOAT = 2**53


@dataclass
class NormalizedIds:
    """One id column after `normalize_ids`.

    Attributes
    ----------
    values : pyarrow.ChunkedArray
        int64 (an integer, float or decimal column, or a text column of integral floats) or
        string (NFC); null where the input was null or whitespace-only.
    kind : {"int", "str"}
        Which of the two the column became.
    blank : numpy.ndarray
        bool per row: the id was whitespace-only (now null; a missing id with its own reason).
    not_integral : numpy.ndarray
        bool per row: a float or decimal that is not an exact integer (the caller refuses it).
    nfc_changed : int >= 0
        Rows whose text changed under NFC normalisation.
    """

    values: pa.ChunkedArray
    kind: str
    blank: np.ndarray
    not_integral: np.ndarray
    nfc_changed: int = 0


def normalize_ids(col: pa.Array | pa.ChunkedArray) -> NormalizedIds:
    """The one id rule of recembed, for a whole column (log, catalog, categories; both engines).

    1. A dictionary (categorical) column is read as its values.
    2. Integer columns stay integers. Float and decimal columns become the same integers
       (``100.0`` and ``Decimal("100.00")`` are the id ``100``); a value that is not an exact
       integer (a fraction, or a float beyond 2**53) is flagged in `not_integral`.
    3. A text column whose every non-missing value is written as an integral float
       (``100.0``: what pandas writes for an integer column holding a missing value) is that
       float column, so the same integers.
    4. Any other text is kept as it is (never trimmed, ``"00123"`` stays ``"00123"``) except
       that it is put in Unicode normal form NFC (the same accented id exported on macOS in
       NFD is the same id); the rows that changed are counted.
    5. A text id made only of whitespace (Python's `str.isspace`: spaces, tabs, line breaks,
       no-break and other Unicode spaces) is missing, flagged in `blank`.

    The empty string and `input.na_values` are the caller's (they are missing too).

    Parameters
    ----------
    col : pyarrow.Array or pyarrow.ChunkedArray
        Any type; anything neither numeric nor text is cast to text.

    Returns
    -------
    NormalizedIds
    """
    import unicodedata

    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(col, pa.Array):
        col = pa.chunked_array([col])
    t = col.type
    n = len(col)
    if pa.types.is_dictionary(t):
        col = pc.cast(col, t.value_type)
        t = col.type
    no = np.zeros(n, bool)
    if pa.types.is_integer(t):
        return NormalizedIds(pc.cast(col, pa.int64()), "int", no, no.copy())
    enc = None
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
        col = pc.cast(col, pa.string())
        enc = pc.dictionary_encode(col).combine_chunks()  # the rules run on distinct values
        if len(enc.dictionary) and pc.all(pc.match_substring_regex(
                enc.dictionary, _INTEGRAL_FLOAT_TEXT)).as_py():
            col = pc.cast(col, pa.float64())
            t = col.type
    if pa.types.is_decimal(t):
        # truncated to int64 and back: equal only for an exact integer that int64 holds
        ints = pc.cast(col, pa.int64(), safe=False)
        back = pc.cast(ints, pa.decimal128(38, t.scale) if t.precision <= 38 else t, safe=False)
        whole = pc.equal(back, pc.cast(col, back.type))
        bad = ~pc.fill_null(whole, True).to_numpy(zero_copy_only=False).astype(bool)
        if bad.any():
            ints = pc.if_else(pa.chunked_array([pa.array(~bad)]), ints, pa.scalar(None, pa.int64()))
        return NormalizedIds(ints, "int", no, bad)
    if pa.types.is_floating(t):
        v = col.to_numpy(zero_copy_only=False).astype(np.float64)  # null -> NaN
        nan = np.isnan(v)
        with np.errstate(invalid="ignore"):
            bad = ~nan & ~((v == np.floor(v)) & (np.abs(v) <= MAX_EXACT_FLOAT))
        ints = np.where(nan | bad, 0, v).astype(np.int64)
        return NormalizedIds(pa.chunked_array([pa.array(ints, mask=nan | bad)]), "int", no, bad)
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        col = pc.cast(col, pa.string())
    # the rule per distinct value, applied back through the dictionary codes
    if enc is None:
        enc = pc.dictionary_encode(col).combine_chunks()
    dictionary = enc.dictionary
    # ASCII values (nearly all, usually) in C: only Python's whitespace, nothing to normalise;
    # the others one by one in Python (NFC, then str.isspace)
    blank_u = pc.fill_null(pc.match_substring_regex(dictionary, _ASCII_BLANK), False) \
        .to_numpy(zero_copy_only=False).copy()
    changed_u = np.zeros(len(dictionary), bool)
    other = np.flatnonzero(~pc.string_is_ascii(dictionary).to_numpy(zero_copy_only=False))
    fixed = None
    if len(other):
        fixed = dictionary.to_pylist()
        for j in other:
            s = fixed[j]
            if not unicodedata.is_normalized("NFC", s):
                fixed[j] = s = unicodedata.normalize("NFC", s)
                changed_u[j] = True
            blank_u[j] = s.isspace()
    uniq = dictionary
    if not (changed_u.any() or blank_u.any()):
        return NormalizedIds(col, "str", no, no.copy(), 0)
    codes = enc.indices.to_numpy(zero_copy_only=False)
    valid = ~pc.is_null(enc.indices).to_numpy(zero_copy_only=False) if enc.null_count else \
        np.ones(n, bool)
    codes = np.where(valid, codes, 0).astype(np.int64)
    blank = valid & blank_u[codes] if len(uniq) else no
    changed = int((valid & changed_u[codes]).sum()) if len(uniq) else 0
    base = pa.array(fixed, pa.string()) if fixed is not None else dictionary
    values = base.take(pa.array(codes))
    values = pc.if_else(pa.array(valid & ~blank), values, pa.scalar(None, pa.string()))
    return NormalizedIds(pa.chunked_array([values]), "str", blank, no.copy(), changed)


def normalize_id(value) -> str | None:
    """One id (a serving query, a single value) under the rule of `normalize_ids`, as the text
    the vocabulary and `items.parquet` hold.

    Parameters
    ----------
    value : int, float, decimal.Decimal, str or any object
        An integral float or decimal is its integer (``100.0`` -> ``"100"``); text is NFC
        normalised, never trimmed; anything else is ``str(value)``.

    Returns
    -------
    str or None
        None for a missing id: None, NaN, the empty string, whitespace-only text, or a float
        / decimal that is not an exact integer (no item has such an id).
    """
    import decimal
    import math
    import unicodedata

    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v) or v != math.floor(v) or abs(v) > MAX_EXACT_FLOAT:
            return None
        return str(int(v))
    if isinstance(value, decimal.Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            return None
        return str(int(value))
    s = value.decode("utf-8") if isinstance(value, bytes) else str(value)
    s = unicodedata.normalize("NFC", s)
    return None if s == "" or s.isspace() else s


def integral_text_key(ids: np.ndarray) -> np.ndarray:
    """The integer a text id reads as, as canonical text ("00123" -> "123", "+5" -> "5",
    "100.0" -> "100"), None for text that is not an integer; for the collision warning of
    `normalize_ids` step 4 (never to change an id).

    Parameters
    ----------
    ids : numpy.ndarray
        object array of str (or None).

    Returns
    -------
    numpy.ndarray
        object array, the same length.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(ids, pa.string())
    hit = pc.fill_null(pc.match_substring_regex(arr, _INTEGRAL_TEXT), False)
    out = np.full(len(ids), None, dtype=object)
    idx = np.flatnonzero(hit.to_numpy(zero_copy_only=False))
    for i in idx:
        out[i] = str(int(ids[i].split(".", 1)[0]))
    return out
