"""The entry scripts' command lines (issue 22's rough edges): both resume spellings, valid ``--set`` examples,
``--help`` without heavy imports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from utils.cli import STAGES, build_parser
from utils.config import ConfigError, _leaf_paths, load_config, load_schema, parse_override

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"giif": "main_giif.py", "disc": "main_disc.py", "srhand": "main.py"}
# Imported by a run, never needed to answer --help.
HEAVY = ("torch", "numpy", "scipy", "pyhocon", "cv2", "trimesh", "smplx", "PIL", "imageio", "tensorboard")
SET_EXAMPLE = re.compile(r"--set[ =]([A-Za-z_][A-Za-z0-9_.]*)=")
PLACEHOLDERS = {"KEY", "key", "a.b.c", "a.b"}


def schema_keys(stage: str) -> set[str]:
    return set(_leaf_paths(load_schema(stage)[0]))


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
    # Literal examples in the code's messages (an f-string example is checked through a run that prints it).
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
