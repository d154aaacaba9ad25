"""recembed.settings: config sections -> the plain parameters each stage's function takes."""

from __future__ import annotations

from recembed.config import load_config
from recembed.settings import resolve_config, walk_params


def test_the_final_walks_are_capped_at_half_the_training_amount_as_candidates_are():
    # calibration chose 1M tokens: the candidates walked at most 500k; so does the final
    chosen = resolve_config(load_config(None), {"enabled": True, "corpus": "both",
                                                "target_tokens": 1_000_000})
    assert walk_params(chosen).max_tokens == 500_000
    # an amount set in the config: the same rule; a smaller walks.max_tokens still wins
    assert walk_params(load_config(None, ["train.target_tokens=3000000"])).max_tokens == 1_500_000
    assert walk_params(load_config(None, ["train.target_tokens=3000000",
                                          "walks.max_tokens=200000"])).max_tokens == 200_000
    # epochs decide (no amount): only walks.max_tokens
    assert walk_params(load_config(None, ["train.target_tokens=3000000", "train.epochs=5"])
                       ).max_tokens == 10_000_000
    assert walk_params(load_config(None)).max_tokens == 10_000_000  # not resolved yet
    # walks.max_tokens = 0 (no cap) still gets the amount's cap
    assert walk_params(load_config(None, ["train.target_tokens=3000000",
                                          "walks.max_tokens=0"])).max_tokens == 1_500_000


def test_the_walks_cap_message_names_what_set_it():
    """A cap from the training-amount rule names train.target_tokens, not walks.max_tokens
    (the old message named walks.max_tokens with the amount's value: a key the user never set)."""
    by_amount = walk_params(load_config(None, ["train.target_tokens=3000000"]))
    assert "train.target_tokens" in by_amount.max_tokens_source and \
        "3,000,000" in by_amount.max_tokens_source
    by_key = walk_params(load_config(None, ["train.target_tokens=3000000",
                                            "walks.max_tokens=200000"]))
    assert by_key.max_tokens_source == "walks.max_tokens"


def test_the_vectors_decay_is_calibrations_choice_unless_the_config_sets_it():
    import pytest

    from recembed.config import ConfigError
    from recembed.settings import blend_settings, calibration_plan

    record = {"enabled": True, "corpus": "both", "target_tokens": 1_000_000,
              "vectors_decay": 0.15, "blend": {"settings": {"decay": 0.8}}}
    chosen = resolve_config(load_config(None), record)
    st = blend_settings(chosen)
    # the exported query's decay and the blend's are two settings
    assert (chosen.serving.vectors_decay, st.vectors_decay, st.decay) == (0.15, 0.15, 0.8)
    # no calibration record: the documented default
    assert resolve_config(load_config(None), None).serving.vectors_decay == 0.65
    # set in the config: kept, and calibration scores only that one
    fixed = load_config(None, ["serving.vectors_decay=0.5"])
    assert resolve_config(fixed, record).serving.vectors_decay == 0.5
    assert calibration_plan(fixed).vectors_decays == (0.5,)
    assert calibration_plan(load_config(None)).vectors_decays == (0.65, 0.35, 1.0, 0.15)
    for bad in ("0", "1.5"):
        with pytest.raises(ConfigError, match=r"serving\.vectors_decay"):
            load_config(None, [f"serving.vectors_decay={bad}"])
