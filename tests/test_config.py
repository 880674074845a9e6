"""utils.config: HOCON loading, includes, env substitution, overrides, schema validation, run records."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from utils.config import ConfigError, conf_to_dict, env_source, load_config, parse_override, save_resolved

REPO = Path(__file__).resolve().parents[1]

SCHEMA = """
# Tiny schema for the tests: every key with its default; null = required.
exp_name = null          # required
data_path = ""           # optional path, "" = unset
seed = 0
train {
  batch = 8
  learning_rate = 1e-4
  epochs = 10
  use_gan = false
  crop = [256, 256]
}
model {
  giif {
    n_feats = 128
    use_normal = true
  }
  extra = {}             # free-form: any keys
}
"""


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def schema(tmp_path):
    return write(tmp_path / "schema.conf", SCHEMA)


def test_include_env_and_defaults(tmp_path, schema, monkeypatch):
    monkeypatch.setenv("SRHAND_TEST_DATA", "/data/interhand")
    monkeypatch.delenv("SRHAND_TEST_UNSET", raising=False)
    write(tmp_path / "base.conf", "train { batch = 4, learning_rate = 5e-4 }\n")
    cfg = write(
        tmp_path / "user.conf",
        """
        include "base.conf"
        exp_name = giif_16  # inline comment
        data_path = ${?SRHAND_TEST_DATA}
        seed = ${?SRHAND_TEST_UNSET}
        train.epochs = 3
        """,
    )
    conf = load_config(cfg, schema=schema)
    assert conf["exp_name"] == "giif_16"
    assert conf["data_path"] == "/data/interhand"
    assert conf["seed"] == 0  # unset env -> key absent -> schema default
    assert conf.get_int("train.batch") == 4 and conf.get_float("train.learning_rate") == 5e-4
    assert conf["train"]["epochs"] == 3
    assert conf["train"]["crop"] == [256, 256] and conf["train"]["use_gan"] is False
    assert conf_to_dict(conf, "model.giif") == {"n_feats": 128, "use_normal": True}
    assert type(conf_to_dict(conf)["train"]) is dict


def test_overrides_types_and_substitution(tmp_path, schema):
    cfg = write(tmp_path / "user.conf", "exp_name = a\ntrain { batch = 8, epochs = ${train.batch} }\n")
    conf = load_config(
        cfg,
        [
            "train.batch=2",
            "train.learning_rate=1e-3",
            "train.use_gan=true",
            "train.crop=[64, 48]",
            "data_path=/mnt/x//y#z",
            'exp_name="quoted name"',
            "model.extra={depth: 3}",
        ],
        schema=schema,
    )
    assert conf["train"]["batch"] == 2 and conf["train"]["epochs"] == 2  # ${} follows the override
    assert conf["train"]["learning_rate"] == pytest.approx(1e-3)
    assert conf["train"]["use_gan"] is True
    assert conf["train"]["crop"] == [64, 48]
    assert conf["data_path"] == "/mnt/x//y#z"  # verbatim string, not a HOCON comment
    assert conf["exp_name"] == "quoted name"
    assert conf_to_dict(conf, "model.extra") == {"depth": 3}
    assert parse_override("a.b=-2")[1] == "-2"
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(cfg, ["train.batch"], schema=schema)


def test_unknown_key_error_names_path_file_and_suggestion(tmp_path, schema):
    write(tmp_path / "base.conf", "model.giif.n_feat = 64\n")
    cfg = write(tmp_path / "user.conf", 'include "base.conf"\nexp_name = a\ntrain.batchsize = 4\n')
    with pytest.raises(ConfigError) as info:
        load_config(cfg, ["train.learning_rte=0.1"], schema=schema)
    text = str(info.value)
    assert "'train.batchsize'" in text and "'train.batch'" in text and str(cfg) in text
    assert "'model.giif.n_feat'" in text and "'model.giif.n_feats'" in text
    assert str(tmp_path / "base.conf") in text  # the included file that defines it
    assert "'train.learning_rte'" in text and "--set train.learning_rte" in text
    assert "'train.learning_rate'" in text


def test_missing_required_and_type_errors(tmp_path, schema):
    cfg = write(tmp_path / "user.conf", "seed = 1\n")
    with pytest.raises(ConfigError, match=r"required key 'exp_name' is not set"):
        load_config(cfg, schema=schema)
    cfg = write(
        tmp_path / "bad.conf", 'exp_name = a\ntrain { batch = 2.5, use_gan = "yes", learning_rate = 1 }\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg, schema=schema)
    text = str(info.value)
    assert "'train.batch'" in text and "must be int" in text
    assert "'train.use_gan'" in text and "must be bool" in text
    assert "learning_rate" not in text  # int is fine for a float key
    assert (
        load_config(cfg, ["train.batch=2", "train.use_gan=false"], schema=schema)["train"]["learning_rate"]
        == 1.0
    )


def test_missing_file_and_bad_syntax(tmp_path, schema):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.conf", schema=schema)
    cfg = write(tmp_path / "broken.conf", "a = {\n b = 1\n")
    with pytest.raises(ConfigError, match="broken.conf"):
        load_config(cfg)
    cfg = write(tmp_path / "sub.conf", "exp_name = ${SRHAND_SURELY_UNDEFINED_VAR}\n")
    with pytest.raises(ConfigError, match="SRHAND_SURELY_UNDEFINED_VAR"):
        load_config(cfg)


def test_save_resolved_round_trip(tmp_path, schema):
    cfg = write(tmp_path / "user.conf", 'exp_name = "a b"\ndata_path = "c:/d//e"\n')
    conf = load_config(cfg, ["train.batch=3"], schema=schema)
    run_dir = tmp_path / "run"
    paths = save_resolved(conf, run_dir, ["main_giif.py", "--conf", str(cfg), "--set", "train.batch=3"])
    assert sorted(p.name for p in run_dir.iterdir()) == ["command.txt", "config.conf", "git_rev.txt"]
    assert "--set train.batch=3" in paths["command"].read_text()
    assert paths["git_rev"].read_text().strip()
    again = load_config(paths["config"], schema=schema)
    assert conf_to_dict(again) == conf_to_dict(conf)


def test_cli_flags_per_stage():
    from utils.cli import build_parser, resolve_device

    args = build_parser("disc").parse_args(
        ["--conf", "c.conf", "--model_path_disc", "d.pth", "--set", "a=1", "--set", "b.c=x", "--resume"]
    )
    assert args.overrides == ["a=1", "b.c=x"] and args.model_path_disc == "d.pth" and args.resume
    args = build_parser("srhand").parse_args(
        ["--conf", "c.conf", "--r", "--implicit_path", "g.pth", "--eval"]
    )
    assert args.resume and args.eval and args.implicit_path == "g.pth" and args.device == "auto"
    with pytest.raises(SystemExit):
        build_parser("giif").parse_args(["--conf", "c.conf", "--mod", "x"])  # no abbreviations
    with pytest.raises(SystemExit):
        build_parser("giif").parse_args(["--eval"])  # --conf is required
    with pytest.raises(SystemExit):
        build_parser("giif").parse_args(["--conf", "c.conf", "--device", "gpu"])
    assert str(resolve_device("cpu")) == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_conf_to_dict_missing_key(tmp_path, schema):
    conf = load_config(write(tmp_path / "u.conf", "exp_name = a\n"), schema=schema)
    with pytest.raises(ConfigError, match="model.nope"):
        conf_to_dict(conf, "model.nope")


def test_env_source_follows_includes_later_lines_and_set(tmp_path, monkeypatch):
    monkeypatch.delenv("SRHAND_TEST_A", raising=False)
    monkeypatch.setenv("SRHAND_TEST_B", "/b")
    write(tmp_path / "base.conf", "data_path = ${?SRHAND_TEST_A}\n")
    cfg = write(
        tmp_path / "user.conf",
        """
        include "base.conf"
        exp_name = ${?SRHAND_TEST_B}
        exp_name = ${?SRHAND_TEST_B}"_run"
        """,
    )
    schema = write(tmp_path / "schema.conf", "exp_name = null\ndata_path = fallback\n")
    conf = load_config(cfg, schema=schema)
    assert env_source(conf, "data_path") == "SRHAND_TEST_A"  # unset: the schema default holds the key
    assert env_source(conf, "exp_name") == "SRHAND_TEST_B" and conf["exp_name"] == "/b_run"
    assert env_source(load_config(cfg, ["data_path=/x"], schema=schema), "data_path") is None
    assert env_source({"data_path": "/x"}, "data_path") is None  # not made by load_config
    assert "SRHAND_TEST_A" not in os.environ  # the environment is restored


@pytest.mark.parametrize(
    ("path", "stage", "var"),
    [
        ("conf/synthetic/giif.conf", "giif", "SRHAND_SYNTHETIC"),
        ("conf/synthetic/disc.conf", "disc", "SRHAND_SYNTHETIC"),
        ("conf/synthetic/srhand.conf", "srhand", "SRHAND_SYNTHETIC"),
        ("conf/giif_16_256_128.conf", "giif", "SRHAND_DATA"),
        ("conf/ih_GIIF_16_256.conf", "srhand", "SRHAND_DATA"),
        ("conf/goliath_GIIF_16_256.conf", "srhand", "GOLIATH_CAPTURE"),
    ],
)
def test_env_source_of_the_repository_configs(path, stage, var, monkeypatch):
    for name in ("SRHAND_SYNTHETIC", "SRHAND_DATA", "GOLIATH_CAPTURE"):
        monkeypatch.delenv(name, raising=False)
    overrides = ["data.data_path=/x", "exp_name=x"]
    try:
        conf = load_config(REPO / path, schema=stage)
    except ConfigError as err:  # data_path is required there: the message names the variable
        assert f"takes it from ${var}, which is not set" in str(err)
        monkeypatch.setenv(var, "/somewhere")
        conf = load_config(REPO / path, schema=stage)
    assert env_source(conf, "data.data_path") == var
    assert env_source(conf, "exp_name") is None
    assert env_source(load_config(REPO / path, overrides, schema=stage), "data.data_path") is None
