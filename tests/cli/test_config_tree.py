"""The config tree and the command line made from it: one declaration per setting, --config FILE,
--print-config, and a run's config.json read back as a config."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from emofuse.cli.main import build_parser, main
from emofuse.cli.options import add_config_arguments, config_yaml, given_settings
from emofuse.configs import option
from emofuse.training.config import CONFIG_GROUPS, OptimConfig, TrainConfig


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions}


def test_every_config_field_is_a_train_flag_with_its_help():
    flags = _flags(_subparser("train"))
    for group, cls in CONFIG_GROUPS:
        for f in dataclasses.fields(cls):
            if not f.metadata.get("cli", True):
                continue
            assert f.name in flags, f"{group}.{f.name} has no flag"
            assert f.metadata["help"] and f.metadata["help"] in flags[f.name].help, f.name


def test_the_groups_make_up_the_run_config_exactly():
    names = [f.name for _, cls in CONFIG_GROUPS for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names)), "a field declared in two groups"
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(TrainConfig))


def test_print_config_is_a_valid_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--print-config", "--lr", "0.003", "--text-lr", "2e-5", "-o", "hidden=16",
              "-E", "vision:attention=none", "--bucket"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    (tmp_path / "run.yaml").write_text(printed)
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tmp_path / "run.yaml"), "--print-config"])
    assert capsys.readouterr().out == printed
    import yaml

    values = yaml.safe_load(printed)
    assert values["lr"] == 0.003 and values["text_lr"] == 2e-5 and values["bucket"] is True
    assert values["model_options"] == {"hidden": 16}
    assert values["encoder_options"] == {"vision": {"attention": "none"}}


def test_flags_win_over_the_file_and_the_file_over_the_defaults(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("lr: 0.01\nepochs: 3\nmodel: tfn\n")
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tmp_path / "c.yaml"), "--lr", "0.5", "--print-config"])
    import yaml

    values = yaml.safe_load(capsys.readouterr().out)
    assert (values["lr"], values["epochs"], values["model"], values["batch_size"]) == (0.5, 3, "tfn", 32)


def test_a_runs_config_json_is_a_valid_config(tmp_path, capsys):
    config = TrainConfig(model="ef_lstm", modalities="T+A", epochs=2, lr=3e-4, model_options={"hidden": 8})
    (tmp_path / "config.json").write_text(json.dumps({"train": config.to_dict(), "frontend": {}}))
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tmp_path / "config.json"), "--print-config"])
    import yaml

    values = yaml.safe_load(capsys.readouterr().out)
    assert TrainConfig.from_dict(values) == config


@pytest.mark.parametrize(("text", "message"), [
    ("bogus: 1\n", "unknown setting(s) ['bogus']"),
    ("lr: abc\n", "lr: 'abc' is not a float"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("lr: [\n", "not YAML or JSON"),
])
def test_a_bad_config_file_is_one_line_naming_it(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err and len(err.strip().splitlines()) == 1


def test_compare_takes_only_what_the_user_typed_as_recipe_overrides(tmp_path):
    from emofuse.cli.common import recipe_overrides

    parser = _subparser("compare")
    assert recipe_overrides(parser.parse_args([])) == {}
    assert recipe_overrides(parser.parse_args(["--lr", "0.01", "--epochs", "2"])) == {"lr": 0.01}
    (tmp_path / "c.yaml").write_text("batch_size: 8\n")
    assert recipe_overrides(parser.parse_args(["--config", str(tmp_path / "c.yaml")])) == {"batch_size": 8}


def test_a_recipe_is_a_partial_optim_config():
    from emofuse.models import list_models
    from emofuse.models.registry import RECIPE_FIELDS, get_recipe

    assert set(RECIPE_FIELDS) <= {f.name for f in dataclasses.fields(OptimConfig)}
    for name in list_models():
        OptimConfig(**get_recipe(name).settings())  # every registered recipe is a valid setting
    tuned = TrainConfig(lr=0.5).with_recipe(get_recipe("mctn"))
    assert tuned.lr == get_recipe("mctn").lr
    assert TrainConfig(lr=0.5).with_recipe(get_recipe("mctn"), {"lr": 0.2}).lr == 0.2
    assert TrainConfig(lr=0.5).with_recipe(None).lr == 0.5


def test_a_new_field_becomes_a_flag_with_no_other_change():
    """What 'one file' means: a field declared with option() is a typed flag, with its help and
    default, read back into the config."""

    @dataclasses.dataclass
    class Extra:
        label_smoothing: float = option(0.0, "label smoothing of the classification loss")
        tags: dict = option(default_factory=dict, flag="--tag", parse=lambda t: tuple(t.split("=", 1)))

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Extra)
    args = parser.parse_args(["--label-smoothing", "0.1", "--tag", "a=b", "--tag", "c=d"])
    assert given_settings(args, [Extra]) == {"label_smoothing": 0.1, "tags": {"a": "b", "c": "d"}}
    assert given_settings(parser.parse_args([]), [Extra]) == {}
    assert "(default: 0.0)" in " ".join(parser.format_help().split())


def test_predict_explain_and_serve_share_one_run_group():
    for name in ("predict", "explain", "serve"):
        flags = _flags(_subparser(name))
        assert flags["run"].required and flags["device"].default == "cpu" and flags["threads"].default == 1
        assert flags["cache"].default is None


def test_config_yaml_shows_each_group():
    text = config_yaml(TrainConfig(), CONFIG_GROUPS)
    for name, _ in CONFIG_GROUPS:
        assert f"# --- {name}:" in text


def test_label_smoothing_reaches_the_classification_loss(capsys):
    """The option added as the one-file example: flag, config and loss."""
    import yaml

    from emofuse.data.synthetic import SyntheticConfig, make_synthetic
    from emofuse.training.optim import make_loss

    with pytest.raises(SystemExit):
        main(["train", "--label-smoothing", "0.1", "--print-config"])
    assert yaml.safe_load(capsys.readouterr().out)["label_smoothing"] == 0.1
    splits = make_synthetic(SyntheticConfig(n_train=16, n_valid=8, n_test=8, classes=3))
    assert make_loss(TrainConfig(label_smoothing=0.1), splits).label_smoothing == 0.1
    assert main(["train", "--label-smoothing", "1.5"]) == 2
