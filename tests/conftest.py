"""Shared fixtures: paths to the real samples in ../shared/data and small synthetic logs."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
YOO = DATA / "yoochoose-clicks-100k"
DIGI = DATA / "diginetica-sample"


def pytest_collection_modifyitems(config, items):
    # The real samples are part of CI; a missing folder is a failure, not a skip.
    if not DATA.exists():
        raise pytest.UsageError(f"real sample data not found at {DATA}")


@pytest.fixture(scope="session")
def synth_csv(tmp_path_factory) -> Path:
    """A 20k-event synthetic CSV log with its items file beside it."""
    from recembed.synth import synth_clicks, write_synth

    out = tmp_path_factory.mktemp("synth") / "clicks.csv"
    write_synth(synth_clicks(20_000, seed=3), out)
    return out
