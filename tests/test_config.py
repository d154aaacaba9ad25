import re

import pytest

from recembed.config import Config, ConfigError, load_config
from tests.conftest import ROOT


def test_defaults_load_without_a_file():
    cfg = load_config(None)
    assert cfg.session.gap_minutes == 30
    assert cfg.run.n_threads() >= 1


def test_unknown_key_names_the_key_and_the_closest_valid_one(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[session]\ngap_minuts = 10\n")
    with pytest.raises(ConfigError, match=r"session\.gap_minuts.*did you mean 'session\.gap_minutes'"):
        load_config(p)


def test_unknown_section_is_an_error(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[trian]\nepochs = 3\n")
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        load_config(p)


def test_overrides_are_typed_and_validated():
    cfg = load_config(None, ["train.epochs=3", "run.name=abc", "session.half_life_days=inf"])
    assert cfg.train.epochs == 3 and cfg.run.name == "abc"
    assert cfg.session.half_life_days == float("inf")
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_config(None, ["train.epochs=0"])
    with pytest.raises(ConfigError, match=r"did you mean .train\.epochs."):
        load_config(None, ["train.epoch=3"])


def test_nightly_toml_documents_every_key():
    """Every config key appears in pipelines/nightly.toml with a comment, and nothing else does."""
    text = (ROOT / "pipelines" / "nightly.toml").read_text()
    section = None
    documented = set()
    for line in text.splitlines():
        m = re.match(r"^\[([\w.]+)\]", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^#?\s*(\w+)\s*=\s*[^#]*#\s*\S", line)
        if m and section:
            documented.add(f"{section}.{m.group(1)}")

    def keys(model, prefix=""):
        out = set()
        for name, f in model.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                out |= keys(ann, f"{prefix}{name}.")
            else:
                out.add(f"{prefix}{name}")
        return out

    assert keys(Config) == documented


def test_pipeline_configs_load():
    for name in ("nightly", "yoochoose", "diginetica"):
        cfg = load_config(ROOT / "pipelines" / f"{name}.toml")
        assert cfg.run.name == name
