"""The entry scripts' command lines (issue 22's rough edges): both resume spellings, valid ``--set`` examples,
``--help`` without heavy imports, no run folder for a run that cannot start, messages that name the
environment variable feeding a key."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.run import main_guard, run_sr_stage, run_srhand
from utils.cli import STAGES, build_parser
from utils.config import ConfigError, _leaf_paths, load_config, load_schema, parse_override

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"giif": "main_giif.py", "disc": "main_disc.py", "srhand": "main.py"}
# Imported by a run, never needed to answer --help.
HEAVY = ("torch", "numpy", "scipy", "pyhocon", "cv2", "trimesh", "smplx", "PIL", "imageio", "tensorboard")
SET_EXAMPLE = re.compile(r"--set[ =]([A-Za-z_][A-Za-z0-9_.]*)=")
PLACEHOLDERS = {"KEY", "key", "a.b.c", "a.b"}


def schema_keys(stage: str) -> set[str]:
    """The keys a schema declares, and those under its free-form groups that its rules check (model.args.*)."""
    tree, rules = load_schema(stage)
    return set(_leaf_paths(tree)) | {rule.key for rule in rules}


def help_text(stage: str) -> str:
    description = (REPO / SCRIPTS[stage]).read_text().split('"""')[1]
    return " ".join(build_parser(stage, description).format_help().split())  # argparse wraps by terminal


@pytest.mark.parametrize("stage", STAGES)
def test_both_resume_spellings_in_every_script(stage):
    parser = build_parser(stage)
    for flag in ("--r", "--resume"):
        args = parser.parse_args(["--conf", "c.conf", flag])
        assert args.resume is True
    assert parser.parse_args(["--conf", "c.conf"]).resume is False
    text = help_text(stage)
    assert "--r, --resume" in text or "--resume, --r" in text
    assert "--r and --resume mean the same" in text


@pytest.mark.parametrize("stage", STAGES)
def test_set_examples_of_help_are_keys_of_the_stage_schema(stage):
    found = [key for key in SET_EXAMPLE.findall(help_text(stage)) if key not in PLACEHOLDERS]
    assert found, "the --help of every script shows a --set example"
    unknown = [key for key in found if key not in schema_keys(stage)]
    assert not unknown, f"{SCRIPTS[stage]} --help shows --set examples that are not keys: {unknown}"


def test_set_examples_of_error_messages_are_schema_keys(tmp_path):
    every_schema = set.intersection(*(schema_keys(stage) for stage in STAGES))
    with pytest.raises(ConfigError) as bad_set:
        parse_override("train.batch_size")
    conf = tmp_path / "ih.conf"
    conf.write_text("exp_name = x\ndata { data_path = ${?SRHAND_TEST_CLI_UNSET} }\n")
    with pytest.raises(ConfigError) as required:
        load_config(conf, schema="giif")
    messages = [str(bad_set.value), str(required.value)]
    for text in messages:
        keys = [k for k in SET_EXAMPLE.findall(text) if k not in PLACEHOLDERS]
        assert keys, text
        assert all(k in every_schema for k in keys), text
    # Literal examples in the code's messages (f-string examples are checked through the runs above and
    # in test_missing_data_path_names_the_variable_that_feeds_it).
    union = set.union(*(schema_keys(stage) for stage in STAGES))
    sources = [REPO / name for name in SCRIPTS.values()]
    for package in ("trainers", "utils", "datasets", "models"):
        sources += sorted((REPO / package).rglob("*.py"))
    bad = []
    for path in sources:
        for key in SET_EXAMPLE.findall(path.read_text()):
            if key not in PLACEHOLDERS and key not in union:
                bad.append(f"{path.relative_to(REPO)}: --set {key}=")
    assert not bad, bad


@pytest.mark.parametrize("stage", STAGES)
def test_help_imports_nothing_heavy(stage):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", SCRIPTS[stage], "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:")
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert not heavy, f"{SCRIPTS[stage]} --help imports {heavy[:10]}"


# ---------------------------------------------------------------------------- no run folder for a bad start


def conf_file(tmp_path: Path, data_path: Path | str, extra: str = "") -> Path:
    path = tmp_path / "run.conf"
    path.write_text(
        f"exp_name = never\nout_root = {json.dumps(str(tmp_path / 'runs'))}\nuse_tensorboard = false\n"
        f"data {{ data_path = {json.dumps(str(data_path))} }}\n{extra}"
    )
    return path


def giif(*argv) -> int:
    return main_guard(lambda: run_sr_stage("giif", "giif", [*map(str, argv), "--device", "cpu"]))


def disc(*argv) -> int:
    return main_guard(lambda: run_sr_stage("disc", "disc", [*map(str, argv), "--device", "cpu"]))


def srhand(*argv) -> int:
    return main_guard(lambda: run_srhand("main.py", [*map(str, argv), "--device", "cpu"]))


def test_missing_data_path_leaves_no_run_folder(tmp_path, capsys):
    conf = conf_file(tmp_path, tmp_path / "no_data")
    for run in (giif, disc, srhand):
        assert run("--conf", conf, "--out", tmp_path / "out") == 2
        err = capsys.readouterr().err
        assert "data.data_path" in err and "no_data" in err and "is not a folder" in err
        assert run("--conf", conf) == 2  # the folder named by the config
        capsys.readouterr()
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_missing_checkpoints_leave_no_run_folder(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    conf = conf_file(tmp_path, tmp_path / "data")
    out = tmp_path / "out"
    missing = tmp_path / "missing.pth"
    cases = [
        (giif, ["--model_path", missing], "--model_path"),
        (giif, ["--eval"], "giif.pth"),
        (giif, ["--r"], "nothing to resume"),
        (disc, [], "main_disc.py starts from a stage-1 GIIF"),
        (disc, ["--model_path", missing], "--model_path"),
        (disc, ["--set", f"giif_model={missing}"], "giif_model"),
        (disc, ["--eval", "--model_path", conf, "--model_path_disc", missing], "--model_path_disc"),
        (srhand, ["--implicit_path", missing], "--implicit_path"),
        (srhand, ["--eval", "--model_path", tmp_path / "no_run"], "model.pth"),
        (srhand, ["--resume"], "nothing to resume"),
        (srhand, ["--set", f"giif_model={missing}"], "giif_model"),
        (srhand, ["--set", "sr_source=giif"], "needs a GIIF checkpoint"),
    ]
    for run, argv, expected in cases:
        assert run("--conf", conf, "--out", out, *argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err, (argv, err)
        assert not out.exists(), argv
    assert not (tmp_path / "no_run").exists()


# ---------------------------------------------------------------------------- messages name the variable


def test_missing_data_path_names_the_variable_that_feeds_it(tmp_path, monkeypatch, capsys):
    var = "SRHAND_TEST_CLI_DATA"
    conf = tmp_path / "env.conf"
    conf.write_text(
        f"exp_name = x\nout_root = {json.dumps(str(tmp_path / 'runs'))}\n"
        f"data {{\n  data_path = {json.dumps(str(tmp_path / 'default'))}\n  data_path = ${{?{var}}}\n}}\n"
    )
    monkeypatch.delenv(var, raising=False)
    assert giif("--conf", conf) == 2
    err = capsys.readouterr().err
    assert f"${var} is not set" in err and "default" in err
    assert f"${var} or --set data.data_path=PATH" in err

    monkeypatch.setenv(var, str(tmp_path / "from_env"))
    assert srhand("--conf", conf) == 2
    err = capsys.readouterr().err
    assert "from_env" in err and f"${var}, read by {conf}" in err

    assert giif("--conf", conf, "--set", f"data.data_path={tmp_path / 'from_set'}") == 2
    err = capsys.readouterr().err
    assert "from_set" in err and f"${var}" not in err and "--set data.data_path=PATH" in err
    assert not (tmp_path / "runs").exists()
    keys = {k for k in SET_EXAMPLE.findall(err) if k not in PLACEHOLDERS}
    assert keys and keys <= schema_keys("giif") & schema_keys("srhand")


def test_a_folder_without_the_interhand_layout_names_where_data_path_came_from(tmp_path, monkeypatch, capsys):
    var = "SRHAND_TEST_CLI_DATA"
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(var, str(tmp_path / "empty"))
    conf = tmp_path / "env.conf"
    conf.write_text(
        f"exp_name = x\nout_root = {json.dumps(str(tmp_path / 'runs'))}\ndata.data_path = ${{?{var}}}\n"
    )
    assert giif("--conf", conf) == 2
    err = capsys.readouterr().err
    assert (
        "not an InterHand2.6M-layout folder" in err and f"${var}, read by {conf}" in err and "images" in err
    )


def test_every_script_the_readme_names_answers_help():
    """Every command in the README runs as written at least as far as its ``--help`` (issue 25)."""
    names = sorted(
        set(re.findall(r"(?<![\w/])((?:scripts/)?[a-z_]+\.py)\b", (REPO / "README.md").read_text()))
    )
    scripts = [
        name for name in names if (REPO / name).is_file() and (name.startswith("scripts/") or "/" not in name)
    ]
    assert {"main.py", "scripts/animate.py", "scripts/export_avatar.py"} <= set(scripts), scripts
    for name in scripts:
        done = subprocess.run(
            [sys.executable, name, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 and "usage:" in done.stdout, f"{name} --help: {done.stderr[-500:]}"
