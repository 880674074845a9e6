"""The schemas' rules (utils/config_rules.py): every numeric key of every schema is given a value outside
its rule and the entry point must stop with exit status 2, naming the key, before creating the run folder.

The walk runs the entry points in-process (``main_guard``), as the other stage tests do; two of the cases
the issue found silent run as real subprocesses too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.run import main_guard, run_sr_stage, run_srhand
from utils.config import ConfigError, _get_path, _leaf_paths, load_config, load_schema
from utils.config_rules import RuleSyntaxError, format_value, is_number, parse_rule, parse_rules

REPO = Path(__file__).resolve().parents[1]
STAGES = ("giif", "disc", "srhand")
# Bad inputs tried by test_every_numeric_key_out_of_range, per stage (filled in as the tests run; printed
# by test_walk_summary for the closing note of issue 13).
TRIED: dict[str, int] = {}


def minimal_conf(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    path = tmp_path / "min.conf"
    path.write_text(
        f"exp_name = walk\nout_root = {json.dumps(str(tmp_path / 'runs'))}\n"
        f"use_tensorboard = false\ndata {{ data_path = {json.dumps(str(data))} }}\n"
    )
    return path


def numeric_keys(tree) -> list[str]:
    keys = []
    for key in _leaf_paths(tree):
        value = _get_path(tree, key)
        if is_number(value) or (isinstance(value, list) and value and all(is_number(v) for v in value)):
            keys.append(key)
    return keys


def bad_value(rules, key: str, default, lookup):
    """A value of ``default``'s type that breaks one of ``key``'s rules (None when none is found)."""
    candidates = [-1, 0, -(10**9), 10**9]
    for rule in rules:
        refs = [lookup(r) for r in rule.references()]
        for b in [*rule.bounds(), *[float(r) for r in refs if is_number(r)]]:
            candidates += [b - 1, b - 0.5, b, b + 0.5, b + 1]
    as_int = isinstance(default, int) or (isinstance(default, list) and isinstance(default[0], int))
    for c in candidates:
        if as_int and float(c) != int(c):
            continue
        c = int(c) if as_int else float(c)
        for rule in rules:
            if rule.violations([c] if rule.each else c, lookup):
                return [c] if isinstance(default, list) else c
    return None


def run_stage(stage: str, argv: list[str]) -> int:
    if stage == "srhand":
        return main_guard(lambda: run_srhand("main.py", [*argv, "--device", "cpu"]))
    return main_guard(lambda: run_sr_stage(stage, stage, [*argv, "--device", "cpu"]))


@pytest.mark.parametrize("stage", STAGES)
def test_every_numeric_key_has_a_rule(stage):
    tree, rules = load_schema(stage)
    ruled = {r.key for r in rules}
    missing = [k for k in numeric_keys(tree) if k not in ruled]
    assert not missing, f"numeric keys of conf/schema/{stage}.conf without a rule: {missing}"


@pytest.mark.parametrize("stage", STAGES)
def test_every_numeric_key_out_of_range(stage, tmp_path, capsys):
    conf = minimal_conf(tmp_path)
    tree, rules = load_schema(stage)
    merged = load_config(conf, schema=stage)

    def lookup(key):
        return _get_path(merged, key)

    tried = 0
    for key in numeric_keys(tree):
        key_rules = [r for r in rules if r.key == key]
        value = bad_value(key_rules, key, _get_path(tree, key), lookup)
        assert value is not None, f"{key}: no value breaks its rules {[r.text for r in key_rules]}"
        setting = f"{key}={format_value(value)}"
        assert run_stage(stage, ["--conf", str(conf), "--set", setting]) == 2, setting
        err = capsys.readouterr().err
        assert f"{key} = {format_value(value)} in --set {setting}: must be" in err, (setting, err)
        assert not (tmp_path / "runs").exists(), f"{setting}: the run folder was created before the check"
        tried += 1
    TRIED[stage] = tried
    assert tried >= {"giif": 29, "disc": 34, "srhand": 90}[stage]


def test_walk_summary(capsys):
    with capsys.disabled():
        print(f"\n[issue 13] bad config values tried by the schema walk: {TRIED} (all exit 2, key named)")


def test_cross_key_rules_name_both_keys_and_origins(tmp_path):
    conf = minimal_conf(tmp_path)
    with open(conf, "a") as handle:
        handle.write("train { scale_max = 2 }\n")
    with pytest.raises(ConfigError) as info:
        load_config(conf, ["train.scale_min=8"], schema="giif")
    assert (
        "train.scale_min = 8.0 in --set train.scale_min=8: must be >= 1 and <= train.scale_max "
        f"(where train.scale_max = 2.0 in {conf})"
    ) in str(info.value)
    # A default that breaks a rule because of another key: the origin says it is the schema's default.
    with pytest.raises(ConfigError) as info:
        load_config(minimal_conf(tmp_path), ["data.hr_size=8"], schema="srhand")
    assert "data.lr_size = 16 in the default of" in str(info.value) and "data.hr_size = 8 in --set" in str(
        info.value
    )
    with pytest.raises(ConfigError) as info:
        load_config(minimal_conf(tmp_path), ["finetune.start=0.9", "finetune.stop=0.5"], schema="srhand")
    assert "finetune.start = 0.9" in str(info.value) and "finetune.stop" in str(info.value)


def test_every_repository_config_satisfies_the_rules():
    checked = 0
    for path in sorted([*REPO.glob("conf/*.conf"), *REPO.glob("conf/synthetic/**/*.conf")]):
        name = path.name
        stage = (
            "srhand" if ("srhand" in name or name.startswith("ih_")) else "disc" if "disc" in name else "giif"
        )
        if "goliath" in name:
            continue  # its data.dataset / data.goliath keys land with issue 14
        load_config(path, ["data.data_path=unused", "exp_name=x"], schema=stage)
        checked += 1
    assert checked >= 10


def test_rule_grammar():
    lookup = {"b": 2.0}.get
    rule = parse_rule("a", "-1 or >= 1 and < b")
    assert [rule.holds_for(v, lookup) for v in (-1, 0, 1, 1.5, 2)] == [True, False, True, True, False]
    assert parse_rule("a", "in [0, 1]").holds_for(0.0, lookup) and not parse_rule("a", "in [0, 1]").holds_for(
        1.1, lookup
    )
    assert parse_rule("a", "> 0").holds_for(float("nan"), lookup) is False
    each = parse_rule("a", "each >= 1")
    assert each.violations([1, 0.5, 3], lookup) == [0.5]
    with pytest.raises(RuleSyntaxError):
        parse_rule("a", "positive")
    with pytest.raises(RuleSyntaxError):
        parse_rules({'"a"': "< c"}, known_keys=["a", "b"])


def test_range_and_choice_rules():
    lookup = {}.get
    pair = parse_rule("a", "range in [0, 3]")
    assert pair.violations([0.5, 1.0], lookup) == []
    assert pair.violations([0.0, 0.0], lookup) == []
    assert pair.violations([1.0, 0.5], lookup) == [[1.0, 0.5]]  # low > high: the pair itself
    assert pair.violations([1.0], lookup) == [[1.0]] and pair.violations([1, 2, 3], lookup) == [[1, 2, 3]]
    assert pair.violations([0.5, 4.0], lookup) == [4.0]
    choice = parse_rule("b", "one of nearest, area, camera")
    assert choice.choices == ("nearest", "area", "camera")
    assert choice.violations("area", lookup) == [] and choice.violations("camra", lookup) == ["camra"]
    with pytest.raises(RuleSyntaxError, match="empty choice"):
        parse_rule("b", "one of a, , c")
    # a rule may name a key below a free-form group of the schema ({}), and only there
    assert parse_rules({'"model.args.residual"': "one of none, bilinear"}, known_keys=["model.args"])
    with pytest.raises(RuleSyntaxError):
        parse_rules({'"model.argz.residual"': "one of none"}, known_keys=["model.args"])


@pytest.mark.parametrize(
    "stage, setting, message",
    [
        (
            "giif",
            "train.degradation=camra",
            'train.degradation = "camra" in --set train.degradation=camra: '
            "must be one of nearest, area, bicubic, camera (did you mean 'camera'?)",
        ),
        ("giif", "eval.degradation=gaussian", 'eval.degradation = "gaussian"'),
        ("giif", "model.args.residual=linear", "must be one of none, bilinear, bicubic"),
        ("giif", "data.lr_camera.psf_sigma=[0.5,5]", "must be range in [0, 3] (element 5)"),
        ("giif", "data.lr_camera.read_noise=[0.02,0.01]", "(a [low, high] pair of numbers with low <= high)"),
        ("giif", "data.lr_camera.poisson_gain=[0,1]", "data.lr_camera.poisson_gain = [0, 1]"),
        ("giif", "data.lr_camera.jpeg_quality=[0,90]", "must be range in [1, 100] (element 0)"),
        ("disc", "model.args.residual=cubic", "did you mean 'bicubic'?"),
        ("srhand", "data.degradation=box", 'data.degradation = "box"'),
        ("srhand", "data.lr_camera.psf_sigma=[-1,1]", "data.lr_camera.psf_sigma = [-1, 1]"),
    ],
)
def test_degradation_and_residual_settings_are_checked_before_the_run_folder(
    stage, setting, message, tmp_path, capsys
):
    """Issue 24's bad inputs: one clear message each, exit 2, no run folder."""
    conf = minimal_conf(tmp_path)
    assert run_stage(stage, ["--conf", str(conf), "--set", setting]) == 2, setting
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "runs").exists()


def test_bad_rule_in_a_schema_is_reported(tmp_path):
    schema = tmp_path / "schema.conf"
    schema.write_text('x = 1\nrules { "x" = ">= y" }\n')
    (tmp_path / "user.conf").write_text("x = 2\n")
    with pytest.raises(ConfigError, match="refers to 'y'"):
        load_config(tmp_path / "user.conf", schema=schema)


@pytest.mark.parametrize(
    "setting, key", [("train.epochs=-1", "train.epochs"), ("train.scale_min=8", "train.scale_min")]
)
def test_silent_cases_of_the_issue_exit_2(tmp_path, setting, key):
    """The two values the issue found taken silently, through the real command line."""
    conf = minimal_conf(tmp_path)
    cmd = [
        sys.executable,
        str(REPO / "main_giif.py"),
        "--conf",
        str(conf),
        "--set",
        setting,
        "--set",
        "train.scale_max=2",
    ]
    result = subprocess.run(
        cmd,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert key in result.stderr and "must be" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_counts_checked_against_the_data(tmp_path):
    """main.py's data-dependent rules, in the same format (checked after the sequence is read)."""
    from types import SimpleNamespace

    from trainers.run import check_data_counts

    conf = load_config(minimal_conf(tmp_path), ["data.num_frames=5"], schema="srhand")
    seq = SimpleNamespace(num_views=20, num_frames=2, name="test/Capture0/seq")
    with pytest.raises(ConfigError) as info:
        check_data_counts(conf, seq)
    assert (
        "data.num_frames = 5 in --set data.num_frames=5: must be <= 2 (the usable frames of test/Capture0/seq"
        in str(info.value)
    )
    assert "data.num_views" not in str(info.value)
    check_data_counts(
        load_config(
            minimal_conf(tmp_path), ["data.frame_ids=[1, 2, 3]", "data.num_frames=5"], schema="srhand"
        ),
        seq,
    )  # explicit frame ids: num_frames unused


@pytest.mark.parametrize("stage", ["giif", "disc"])
def test_residual_mode_against_a_checkpoint_without_it_exits_2_before_the_run_folder(stage, tmp_path, capsys):
    """A residual config starting from (or evaluating) a checkpoint written before model.residual existed."""
    import models
    from utils.checkpoint import make_checkpoint, model_entry, save_atomic

    spec = {
        "name": "giif",
        "args": {
            "encoder": {"name": "rdn", "args": {"G0": 8, "D": 1, "C": 1, "G": 4}},
            "normal_encoder": {
                "name": "hg_filter",
                "args": {"n_feat": 8, "num_stack": 1, "depth": 1, "out_dim": 8},
            },
            "hidden_list": [8],
        },
    }
    ckpt = make_checkpoint("giif", model_entry(models.make(spec)))
    del ckpt["model"]["args"]["residual"]
    path = save_atomic(ckpt, tmp_path / "old_giif.pth")
    conf = minimal_conf(tmp_path)
    argv = ["--conf", str(conf), "--model_path", str(path), "--set", "model.args.residual=bilinear"]
    assert run_stage(stage, argv) == 2
    err = capsys.readouterr().err
    assert "model.args.residual = 'bilinear' (from --set model.args.residual=bilinear)" in err, err
    assert "it predates the option" in err and "--set model.args.residual=none" in err, err
    assert not (tmp_path / "runs").exists()
    assert run_stage(stage, [*argv, "--eval"]) == 2 and "it predates the option" in capsys.readouterr().err
