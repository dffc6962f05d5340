"""Every option is checked (type, range, known name) when a recipe is resolved, before any work."""

from __future__ import annotations

import dataclasses

import pytest

from esrkit.config import RULES, ConfigError, RunConfig, config_from_dict, resolve_recipe

# one bad value per rule (the option named in the error); each is accepted by the type check alone
BAD = [
    ("name", "'../../x'"),
    ("name", "'/abs/run'"),
    ("name", "'..'"),
    ("name", "''"),
    ("data.ts_user", "-1"),
    ("data.ts_item", "-1"),
    ("data.group_rule", "top20"),
    ("data.max_len", "0"),
    ("embedding.provider", "gpt-99"),
    ("embedding.templates", "nope"),
    ("embedding.user_provider", "gpt-99"),
    ("embedding.pca_dim", "-8"),
    ("retrieval.n_similar", "0"),
    ("retrieval.top_k", "0"),
    ("retrieval.method", "faiss"),
    ("retrieval.exact_below", "-1"),
    ("retrieval.hnsw_m", "1"),
    ("retrieval.hnsw_ef_construction", "0"),
    ("retrieval.hnsw_ef", "0"),
    ("model.name", "sasrecc"),
    ("model.backbone", "transformer"),
    ("model.hidden", "0"),
    ("model.hidden", "63"),
    ("model.layers", "-1"),
    ("model.heads", "0"),
    ("model.dropout", "2"),
    ("model.dropout", "1.0"),
    ("model.dropout", "-0.1"),
    ("model.mask_prob", "1.5"),
    ("model.mask_prob", "0"),
    ("model.objective", "every"),
    ("model.cross_heads", "0"),
    ("model.adapter_layers", "3"),
    ("model.id_init", "zeros"),
    ("model.alpha", "-0.1"),
    ("model.sd_loss", "l1"),
    ("model.teacher_refresh", "never"),
    ("model.loss", "hinge"),
    ("model.loss_sampler", "zipf"),
    ("model.gbce_t", "1.5"),
    ("model.popularity_adjust", "-1"),
    ("model.popularity_adjust", "0.5"),  # with the default loss (bce): a softmax loss is needed
    ("model.ce_precision", "float16"),
    ("model.label_smoothing", "1.0"),
    ("model.label_smoothing", "0.1"),  # with the default loss (bce): only ce has every item
    ("model.neighbour_smoothing", "1.0"),
    ("model.neighbour_smoothing", "0.1"),  # ce, LLMInit with text neighbours only
    ("model.gate", "item"),
    ("model.null_dim", "0"),
    ("model.null_threshold", "-1"),
    ("model.table_scale", "-1"),
    ("model.temperature", "0"),
    ("model.anchor", "-1"),
    ("model.text_neighbours", "-1"),
    ("model.new_item_norm", "longest"),
    ("model.new_item_norm", "trained"),  # an LLMInit option; the recipe's model is another family
    ("model.init_norm", "xavier"),
    ("model.init_norm", "backbone"),  # an LLMInit option too
    ("model.start_gate", "true"),  # an LLMInit option too
    ("model.neighbour_boost", "-1"),
    ("model.neighbour_boost", "0.5"),  # LLMInit with text neighbours only
    ("model.neighbour_boost_items", "0"),
    ("model.neighbour_boost_tail", "-1"),
    ("model.text_boost", "-1"),
    ("model.text_boost", "0.5"),  # LLMInit with text neighbours only
    ("model.text_boost_items", "0"),
    ("model.text_boost_tail", "-1"),
    ("model.popularity_tilt", "-0.1"),
    ("model.popularity_tilt", "0.1"),  # LLMInit with text neighbours only
    ("model.popularity_tilt_items", "0"),
    ("model.neighbour_dropout", "1"),
    ("model.neighbour_dropout", "0.2"),  # LLMInit with text neighbours only
    ("train.lr", "0"),
    ("train.lr", "-1e-3"),
    ("train.weight_decay", "-1"),
    ("train.ema", "1"),
    ("train.ema", "-0.5"),
    ("train.item_lr", "-1e-3"),
    ("train.batch_size", "0"),
    ("train.epochs", "-1"),
    ("train.epochs", "0"),
    ("train.patience", "0"),
    ("train.watch", "foo@10"),
    ("train.watch", "ndcg@7"),
    ("train.watch", "ndcg"),
    ("train.seed", "-1"),
    ("train.device", "tpu"),
    ("train.negatives", "0"),
    ("train.max_batches_per_epoch", "-1"),
    ("train.buckets", "-2"),
    ("eval.protocols", "['sampled', 'all']"),
    ("eval.protocols", "[]"),
    ("eval.negatives", "0"),
    ("eval.validation_negatives", "sometimes"),
    ("eval.ks", "[0, 10]"),
    ("eval.ks", "[]"),
    ("eval.ties", "best"),
    ("eval.batch_size", "0"),
    ("eval.valid_protocol", "both"),
]


@pytest.mark.parametrize(("key", "value"), BAD, ids=[f"{k}={v}" for k, v in BAD])
def test_a_bad_value_is_refused_naming_the_option(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_recipe("demo", [f"{key}={value}"])
    message = str(exc.value)
    assert f"{key} = " in message and "demo.toml" in message, message
    reported = {line.split(" = ")[0] for line in message.split("\n  ")[1:]}
    assert reported in ({key}, {key, "train.watch"})  # empty eval.ks also leaves train.watch with no k


def test_every_rule_has_a_bad_case_and_names_a_real_option() -> None:
    assert {k for k, _ in BAD} == set(RULES)
    for key in RULES:
        node = RunConfig()
        for part in key.split("."):
            assert part in {f.name for f in dataclasses.fields(node)}, key
            node = getattr(node, part)


def test_defaults_every_recipe_and_edge_values_pass() -> None:
    from esrkit.resources import list_resources

    for name in list_resources("recipe"):
        resolve_recipe(name)
    cfg = resolve_recipe(
        "demo",
        [
            "model.dropout=0",
            "model.mask_prob=1",
            "train.epochs=1",
            "train.watch=HR@5",
            "eval.ks=[5]",
            "retrieval.method=hnsw",
            "train.device=cuda:1",
            "name=a/b",
        ],
    )
    assert cfg.train.watch == "HR@5" and cfg.name == "a/b"


def test_options_of_one_family_or_loss_pass_where_they_apply() -> None:
    cfg = resolve_recipe(
        "demo",
        [
            "model.name=llminit",
            "model.new_item_norm=trained",
            "model.init_norm=backbone",
            "model.start_gate=true",
        ],
    )
    assert cfg.model.new_item_norm == "trained" and cfg.model.init_norm == "backbone"
    assert cfg.model.start_gate is True
    cfg = resolve_recipe(
        "demo",
        [
            "model.loss=ce",
            "model.popularity_adjust=0.5",
            "model.ce_precision=bfloat16",
            "model.label_smoothing=0.1",
        ],
    )
    assert cfg.model.popularity_adjust == 0.5 and cfg.model.ce_precision == "bfloat16"
    assert cfg.model.label_smoothing == 0.1
    boost = ["model.name=llminit", "model.text_neighbours=3", "model.neighbour_boost=0.5"]
    cfg = resolve_recipe("demo", boost)
    assert cfg.model.neighbour_boost == 0.5
    with pytest.raises(ConfigError, match="needs model.text_neighbours > 0"):
        resolve_recipe("demo", ["model.name=llminit", "model.neighbour_boost=0.5"])
    cfg = resolve_recipe("demo", [*boost, "model.neighbour_boost_items=3", "model.neighbour_boost_tail=2"])
    assert (cfg.model.neighbour_boost_items, cfg.model.neighbour_boost_tail) == (3, 2.0)
    assert resolve_recipe("demo", [*boost, "model.neighbour_dropout=0.2"]).model.neighbour_dropout == 0.2
    smooth = [*boost, "model.loss=ce", "model.neighbour_smoothing=0.3"]
    assert resolve_recipe("demo", smooth).model.neighbour_smoothing == 0.3
    with pytest.raises(ConfigError, match="needs model.loss = ce"):
        resolve_recipe("demo", [*boost, "model.neighbour_smoothing=0.3"])
    with pytest.raises(ConfigError, match="must sum to less than 1"):
        resolve_recipe("demo", [*smooth, "model.label_smoothing=0.7"])
    with pytest.raises(ConfigError, match="neighbour_boost_items.*applies to model.name = llminit only"):
        resolve_recipe("demo", ["model.neighbour_boost_items=3"])
    # a recipe's bonus is turned off by neighbour_boost alone (its refinements are inert without it)
    assert resolve_recipe("beauty5-best", ["model.neighbour_boost=0"]).model.neighbour_boost_items == 3


def test_an_objective_override_fits_its_backbone() -> None:
    cfg = resolve_recipe("demo", ["model.backbone=gru4rec", "model.objective=seq2seq"])
    assert cfg.model.objective == "seq2seq"
    last = resolve_recipe("demo", ["model.backbone=bert4rec", "model.objective=last"])
    assert last.model.objective == "last"
    # a cloze encoder attends both ways: at every position it would see the item it is to predict
    with pytest.raises(ConfigError, match="model.objective = 'seq2seq': backbone bert4rec attends both ways"):
        resolve_recipe("demo", ["model.backbone=bert4rec", "model.objective=seq2seq"])


def test_all_problems_are_listed_at_once() -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_recipe("demo", ["train.epochs=-1", "train.batch_size=0", "model.dropout=2"])
    message = str(exc.value)
    assert all(k in message for k in ("train.epochs = -1", "train.batch_size = 0", "model.dropout = 2.0"))


def test_names_follow_the_registries(scratch_encoders) -> None:
    from torch import nn

    with pytest.raises(ConfigError, match="known: .*sasrec"):
        resolve_recipe("demo", ["model.backbone=config-test-encoder"])

    @scratch_encoders.register("config-test-encoder", objective="seq2seq", inputs="plain")
    class Encoder(nn.Module):  # a user's own encoder, registered before the recipe is resolved
        pass

    cfg = resolve_recipe("demo", ["model.backbone=config-test-encoder"])
    assert cfg.model.backbone == "config-test-encoder"


def test_name_from_the_command_line_is_checked_and_long_values_are_cut() -> None:
    with pytest.raises(ConfigError, match="stays inside the output folder"):
        resolve_recipe("demo", top={"name": "../elsewhere"})
    assert resolve_recipe("demo", top={"name": "mine", "output_dir": None}).name == "mine"
    with pytest.raises(ConfigError) as exc:
        resolve_recipe("demo", ["data.group_rule=" + "x" * 100_000])
    assert len(str(exc.value)) < 400 and "100,000 characters" in str(exc.value)


def test_a_run_config_is_validated_too() -> None:
    tree = RunConfig().to_dict()
    tree["train"]["epochs"] = -1
    with pytest.raises(ConfigError, match="train.epochs"):
        config_from_dict(tree)


def test_a_misspelt_key_gets_the_close_name_suggested_and_a_far_one_none():
    with pytest.raises(
        ConfigError, match=r"unknown key\(s\) \['hiden'\] \(did you mean 'hidden'\?\); allowed"
    ):
        config_from_dict({"model": {"hiden": 64}})
    with pytest.raises(
        ConfigError, match=r"\['hiden', 'lossx'\] \(did you mean 'hiden' -> 'hidden', 'lossx' -> 'loss'\?\)"
    ):
        config_from_dict({"model": {"hiden": 64, "lossx": "ce"}})
    with pytest.raises(ConfigError, match=r"\['modle'\] \(did you mean 'model'\?\)"):
        config_from_dict({"modle": {"hidden": 64}})
    with pytest.raises(ConfigError) as far:
        config_from_dict({"model": {"zzz": 1}})
    assert "did you mean" not in str(far.value) and "allowed:" in str(far.value)


@pytest.mark.parametrize(
    "option, hint",
    [
        ("model.loss=cee", "is not a registered loss (did you mean 'ce'?)"),
        ("model.name=llmesrr", "is not a registered model (did you mean 'llmesr'?)"),
        ("embedding.provider=minlm", "is not a provider definition (did you mean 'minilm'?)"),
    ],
)
def test_a_misspelt_name_gets_the_close_one_suggested(option, hint):
    with pytest.raises(ConfigError) as err:
        resolve_recipe("demo", [option])
    assert hint in str(err.value)


def test_a_misspelt_recipe_gets_the_close_one_suggested():
    with pytest.raises(
        FileNotFoundError, match=r"no recipe named 'beauty5-bset' \(did you mean 'beauty5-best'\?\)"
    ):
        resolve_recipe("beauty5-bset", [])
