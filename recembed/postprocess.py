"""Post-processing of the vector space: one affine map fitted on the trained item vectors,
applied to every served vector (numpy only: it runs in serving).

A transform is ``y = (x - mean) @ matrix`` (row vectors), one of:

- ``none``: the identity;
- ``center``: ``mean`` = the item vectors' mean, ``matrix`` = I (mean-centering);
- ``abtt:d``: "all-but-the-top" (Mu & Viswanath 2018): centre, then remove the projection on
  the top ``d`` principal directions of the centred item vectors, ``matrix = I - U_d U_d^T``;
- ``whiten`` / ``whiten:r``: PCA whitening, ``matrix = V_r diag(lambda_r)^-1/2`` (the top ``r``
  principal directions, all by default): the output has ``r`` dimensions and identity covariance;
- ``zca``: ZCA whitening, ``matrix = V diag(lambda)^-1/2 V^T``: identity covariance in the
  original axes. It is PCA whitening followed by a rotation, so every cosine and dot product,
  hence every ranking, equals ``whiten``'s; calibration therefore never tries it.

Eigenvalues below ``1e-6`` x the largest are raised to that floor before whitening (a
direction the vectors do not use is not blown up).

**Item and context vectors.** Both get the *same* map, the one fitted on the item (input)
vectors. The directional score of a query (decayed prefix sum ``q = sum_k w_k x_k`` of item
vectors, ``a = sum_k w_k``) against a candidate's context vector ``c`` becomes::

    T(q) . T(c) = (q - a mean)^T M (c - mean),   M = matrix @ matrix^T

Terms that do not depend on the candidate do not change a ranking, so what each transform
does to the directional path is: ``none``: nothing; ``center``: subtracts ``a mean . c``
per candidate (the share of the score every query gets from the common direction, which
favours the same items for every query); ``abtt:d``: that, and the score no longer counts
the top ``d`` item directions (``M`` = the projection off them); ``whiten``: a Mahalanobis
inner product under the item covariance (``M = Sigma^-1``, truncated to ``r`` directions).
The cosine path (`similar`) is the cosine of the transformed item vectors. The map acts on
the query's vectors, never on its weights, so `recembed.export.directional_query` over the
exported (transformed) vectors is the same score.

The transform is saved as ``postprocess.npz`` (`recembed.artifacts.POSTPROCESS`, no pickle)
by `VectorTransform.save`, its one writer, and read by `VectorTransform.load`, its one reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

KINDS = ("none", "center", "abtt", "whiten", "zca")
EIGEN_FLOOR = 1e-6  # relative floor of the eigenvalues a whitening divides by


def parse_spec(spec: str, dim: int) -> tuple[str, int]:
    """(kind, parameter) of a transform spec for vectors of `dim` dimensions.

    Parameters
    ----------
    spec : str
        ``none``, ``center``, ``abtt:d`` (1 <= d < dim), ``whiten``, ``whiten:r``
        (1 <= r <= dim) or ``zca``.
    dim : int >= 1
        The vectors' dimension.

    Returns
    -------
    kind : str
        One of `KINDS`.
    parameter : int
        ``d`` for abtt, ``r`` for whiten (``dim`` when not given), 0 otherwise.

    Raises
    ------
    ValueError
        The spec is not one of these, or its number is out of range for `dim`.
    """
    kind, _, num = str(spec).partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown post-processing {spec!r}: use none, center, abtt:D, "
                         "whiten, whiten:R or zca")
    if kind in ("none", "center", "zca"):
        if num:
            raise ValueError(f"post-processing {kind!r} takes no number, got {spec!r}")
        return kind, 0
    if not num:
        if kind == "abtt":
            raise ValueError(f"abtt needs the directions to remove, e.g. abtt:1; got {spec!r}")
        return kind, dim
    if not num.isdigit():
        raise ValueError(f"post-processing {spec!r}: the number after ':' must be a whole "
                         "number")
    n = int(num)
    if kind == "abtt" and not 1 <= n < dim:
        raise ValueError(f"{spec!r}: abtt removes 1 to {dim - 1} directions of {dim}-"
                         "dimensional vectors")
    if kind == "whiten" and not 1 <= n <= dim:
        raise ValueError(f"{spec!r}: whitening keeps 1 to {dim} dimensions of {dim}-"
                         "dimensional vectors")
    return kind, n


def output_dim(spec: str, dim: int) -> int:
    """The dimension of the vectors `spec` gives from `dim`-dimensional ones (``whiten:r``
    reduces it to r; ``"auto"`` and every other transform keep it)."""
    if spec == "auto":
        return dim
    kind, p = parse_spec(spec, dim)
    return p if kind == "whiten" else dim


def auto_options(dim: int) -> list[str]:
    """The transforms calibration tries for `dim`-dimensional vectors, simplest first (a tie
    within one standard error goes to the earlier one): none, center, abtt:1, abtt:2,
    abtt:dim/100 (Mu & Viswanath's rule, when above 2), whiten:dim/2, whiten."""
    out = ["none", "center"]
    out += [f"abtt:{d}" for d in sorted({1, 2, dim // 100}) if 1 <= d < dim]
    if dim // 2 >= 1 and dim // 2 < dim:
        out.append(f"whiten:{dim // 2}")
    out.append("whiten")
    return out


@dataclass
class VectorTransform:
    """``y = (x - mean) @ matrix``, fitted by `fit` (module docstring).

    Parameters
    ----------
    spec : str
        What was fitted (`parse_spec`), e.g. ``"abtt:2"``.
    mean : float64 [d_in]
        Subtracted first (zeros for ``none``).
    matrix : float64 [d_in, d_out]
        Applied to the centred row vectors.
    """

    spec: str
    mean: np.ndarray
    matrix: np.ndarray

    @property
    def dim_in(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def dim_out(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def identity(self) -> bool:
        """Whether `apply` returns its input (``none``)."""
        return parse_spec(self.spec, self.dim_in)[0] == "none"

    @classmethod
    def fit(cls, spec: str, vectors: np.ndarray) -> VectorTransform:
        """Fit `spec` on item vectors.

        Parameters
        ----------
        spec : str
            A transform (`parse_spec`).
        vectors : float [n, d]
            The trained item (input) vectors; n >= 1 (n >= 2 for the principal directions).

        Returns
        -------
        VectorTransform
        """
        x = np.asarray(vectors, np.float64)
        if x.ndim != 2 or not x.shape[1]:
            raise ValueError(f"vectors must be [n, d], got shape {x.shape}")
        n, d = x.shape
        kind, p = parse_spec(spec, d)
        eye = np.eye(d)
        if kind == "none" or n == 0:
            return cls(str(spec), np.zeros(d), eye if kind != "whiten" else eye[:, :p])
        mean = x.mean(axis=0)
        if kind == "center":
            return cls(str(spec), mean, eye)
        xc = x - mean
        cov = xc.T @ xc / n
        lam, vec = np.linalg.eigh(cov)  # ascending
        lam, vec = lam[::-1], vec[:, ::-1]
        vec = vec * np.where(vec[np.abs(vec).argmax(axis=0), np.arange(d)] < 0, -1.0, 1.0)
        if kind == "abtt":
            top = vec[:, :p]
            return cls(str(spec), mean, eye - top @ top.T)
        lam = np.maximum(lam, max(float(lam[0]), 1e-300) * EIGEN_FLOOR)
        if kind == "whiten":
            return cls(str(spec), mean, vec[:, :p] / np.sqrt(lam[:p]))
        return cls(str(spec), mean, (vec / np.sqrt(lam)) @ vec.T)  # zca

    def apply(self, x: np.ndarray | None) -> np.ndarray | None:
        """The transformed vectors, float32 [n, d_out] (None stays None)."""
        if x is None:
            return None
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim_in:
            raise ValueError(f"the transform takes [n, {self.dim_in}] vectors, got {x.shape}")
        if self.identity:
            return np.ascontiguousarray(x, np.float32)
        return np.ascontiguousarray((x.astype(np.float64) - self.mean) @ self.matrix,
                                    np.float32)

    def rotated(self, rotation: np.ndarray) -> VectorTransform:
        """The transform followed by ``@ rotation`` [d_out, d_out] (`recembed.publish`'s
        alignment to the previous version rotates the served vectors after the transform)."""
        return VectorTransform(self.spec, self.mean, self.matrix @ np.asarray(rotation,
                                                                             np.float64))

    def to_dict(self) -> dict:
        """What train.json records: the spec and the dimensions."""
        return {"spec": self.spec, "dim_in": self.dim_in, "dim_out": self.dim_out}

    def save(self, path: str | Path) -> None:
        """Write ``postprocess.npz`` (spec, mean, matrix; no pickle) atomically."""
        from recembed.artifacts import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, spec=np.array(self.spec), mean=self.mean, matrix=self.matrix)

    @classmethod
    def load(cls, path: str | Path) -> VectorTransform:
        """The transform `save` wrote.

        Raises
        ------
        OSError, ValueError, KeyError
            Missing, truncated, or not a postprocess.npz.
        """
        with np.load(path, allow_pickle=False) as z:
            spec, mean, matrix = str(z["spec"][()]), z["mean"], z["matrix"]
        if matrix.ndim != 2 or mean.shape != (matrix.shape[0],):
            raise ValueError(f"{path}: mean {mean.shape} and matrix {matrix.shape} disagree")
        parse_spec(spec, matrix.shape[0])
        return cls(spec, np.asarray(mean, np.float64), np.asarray(matrix, np.float64))


def choose(results: dict[str, dict]) -> str:
    """The transform to keep: the simplest (first in `results`' order) whose objective is
    within one standard error of the best one's.

    Parameters
    ----------
    results : dict
        spec -> {"objective": float, "se": float >= 0}, simplest first.
    """
    if not results:
        return "none"
    best = max(results.values(), key=lambda r: r["objective"])
    floor = best["objective"] - best["se"]
    return next(s for s, r in results.items() if r["objective"] >= floor)
