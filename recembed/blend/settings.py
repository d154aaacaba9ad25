"""The blend's vocabulary and its settings (serving.json): a leaf module.

It imports the standard library only (no numpy, numba or other recembed modules), so that the
configuration can name the signals without loading the kernels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SIGNALS = ("directional", "cosine", "rules", "neighbours", "repeat", "popularity", "category")
N_SIGNALS = len(SIGNALS)  # the kernels' signal count (a compile-time constant for numba)
RETRIEVALS = ("index", "table")
# the `BlendModel` arrays of the `category` signal (`category_arrays`), as blend.npz names them
CATEGORY_KEYS = ("item_category", "category_rank", "category_indptr", "category_rows")


@dataclass
class BlendSettings:
    """How `recommend` scores candidates (serving.json).

    Parameters
    ----------
    weights : dict of signal name -> float >= 0
        Weight of each signal in `SIGNALS`; missing = 0.
    decay : float in (0, 1]
        Query vector weight of the item j steps back: decay ** j (the blend's candidates and
        directional signal).
    vectors_decay : float in (0, 1]
        The same weight in the directional query of the exported vectors alone
        (`recembed.export.directional_query`, the evaluation's ``:ann`` row), chosen on the
        vectors-alone objective (`recembed.calibrate`, "the vectors' query decay"). Settings
        files without the key (older versions) mean `decay`.
    history : int >= 1
        Recent session items in the query vector.
    temperature : float > 0
        Directional normalisation `exp((d - max d) / temperature)`.
    repeat_decay : float in (0, 1]
        Repeat bonus of an item seen j steps back: repeat_decay ** j.
    candidates : int >= 1
        Candidates fetched from the directional index per query (others add theirs).
    popular : int >= 0
        Most popular items always added as candidates (tiny catalogues, cold sessions); with
        category arrays, also the newest items of the last item's category.
    neighbours : dict
        Session-kNN method and parameter overrides (`recembed.sknn.method_params`):
        {"method": "stan" | "vsknn" | "vstan" | "off", ...}; empty = STAN's defaults.
    exclude_last : bool
        Never recommend the item being viewed.
    retrieval : "index" | "table"
        Where the directional and cosine candidates come from. "index": a search of the
        decayed prefix query in the inner-product and cosine indexes (two ANN searches per
        query; their cost: benchmarks/RESULTS.md, "serving"). "table": each item's own top
        `candidates` (directional) and top `candidates // 4` (cosine), searched once per
        item when the version is built (`candidate_tables`); a session takes a share of
        each recent item's list proportional to its decay weight (`table_rows`), so a
        one-item session gets exactly what "index" gives it. Settings files without the key
        (older versions) mean "index".
    """

    weights: dict = field(default_factory=lambda: {"directional": 1.0, "repeat": 0.3,
                                                   "popularity": 0.01})
    decay: float = 0.65
    vectors_decay: float = 0.65
    history: int = 10
    temperature: float = 1.0
    repeat_decay: float = 0.7
    candidates: int = 200
    popular: int = 50
    neighbours: dict = field(default_factory=lambda: {"method": "stan"})
    exclude_last: bool = True
    retrieval: str = "index"

    def __post_init__(self) -> None:
        if self.retrieval not in RETRIEVALS:
            raise ValueError(f"serving retrieval must be one of {RETRIEVALS}, got "
                             f"{self.retrieval!r}")

    @classmethod
    def from_dict(cls, d: dict) -> BlendSettings:
        """Settings from serving.json (unknown keys ignored, so old files still load)."""
        known = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in known}
        if "vectors_decay" not in kw and "decay" in kw:
            kw["vectors_decay"] = kw["decay"]  # older versions exported with the blend's decay
        return cls(**kw)

    def to_dict(self) -> dict:
        """The settings as serving.json stores them (plain JSON types)."""
        return asdict(self)
