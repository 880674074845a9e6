"""utils.config: HOCON loading, includes, env substitution, overrides, schema validation, run records."""

from __future__ import annotations

import textwrap

import pytest

from utils.config import ConfigError, conf_to_dict, load_config, parse_override, save_resolved

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
    assert args.r and args.eval and args.implicit_path == "g.pth" and args.device == "auto"
    with pytest.raises(SystemExit):
        build_parser("giif").parse_args(["--conf", "c.conf", "--r"])  # --r is srhand's flag
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
