"""scripts/benchmark.py builds every row from the project's entry scripts and configs: each command it
would run (both scales) names an existing config and only keys that config's schema knows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from utils.config import load_config

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = {"main_giif.py": "giif", "main_disc.py": "disc", "main.py": "srhand"}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_script", REPO / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(cmd: list[str]):
    """The config a command would run with: its --conf and --set arguments through the schema."""
    script = Path(cmd[1]).name
    conf = cmd[cmd.index("--conf") + 1]
    sets = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--set"]
    return load_config(REPO / conf, sets, schema=SCHEMAS[script])


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_every_command_loads_its_config(bench, scale, tmp_path):
    args = bench.parse_args(["--scale", scale, "--work", str(tmp_path), "--seeds", "0", "1", "--sr_seeds", "0", "3"])
    assert args.giif_model == str(tmp_path / "sr_disc" / "giif.pth")
    sr = bench.sr_jobs(args, tmp_path)
    assert [(name, seed, path.name) for name, seed, path, _ in sr] == [
        ("liif", 0, "sr_liif"), ("giif", 0, "sr_giif"), ("disc", 0, "sr_disc"), ("giif_noadv", 0, "sr_giif_noadv"),
        ("liif", 3, "sr_liif_s3"), ("giif", 3, "sr_giif_s3"), ("disc", 3, "sr_disc_s3"),
        ("giif_noadv", 3, "sr_giif_noadv_s3")]
    confs = [_load(cmd) for _, _, _, cmd in sr]
    for (_, seed, _, cmd), conf in zip(sr, confs):
        assert conf.get_string("data.data_path") == args.data and conf.get_int("seed") == seed
        if scale == "cpu":
            assert conf.get_int("train.max_steps") in (324, 108)
    assert confs[0].get_string("model.name") == "liif" and confs[1].get_string("model.name") == "giif"
    assert confs[3].get_float("adv.adv_weight") == 0.0 and confs[2].get_float("adv.adv_weight") > 0
    assert sr[6][3][sr[6][3].index("--model_path") + 1] == str(tmp_path / "sr_giif_s3" / "giif.pth")

    keys = [key for table in bench.TABLES.values() for key in table[0]]
    jobs = bench.srhand_jobs(args, tmp_path, keys, check_models=False)
    assert len(jobs) == 2 * len(keys)
    assert all(cmd[cmd.index(f"seed={seed}") - 1] == "--set" for _, seed, _, cmd in jobs)
    confs = {(key, seed): _load(cmd) for key, seed, _, cmd in jobs if seed == 0}
    for (key, seed), conf in confs.items():
        assert conf.get_int("seed") == seed
        assert conf.get_string("giif_model").endswith("sr_liif/giif.pth" if key == "liif_xhand" else "sr_disc/giif.pth")
    w = {key: confs[(key, 0)] for key in ("ft_con", "ft_con_wav", "srhand")}
    assert (w["ft_con"].get_float("finetune.weights.wavelet"), w["ft_con"].get_float("finetune.weights.disc")) == (0, 0)
    assert w["ft_con_wav"].get_float("finetune.weights.wavelet") > 0 == w["ft_con_wav"].get_float("finetune.weights.disc")
    assert w["srhand"].get_float("finetune.weights.wavelet") > 0 and w["srhand"].get_float("finetune.weights.disc") > 0
    assert confs[("srhand_noisy", 0)].get_float("data.mano_noise.pose_std") > 0
    assert confs[("srhand", 0)].get_float("data.mano_noise.pose_std") == 0
    assert not confs[("giif_xhand", 0)].get_bool("model.use_enh") and confs[("giif_ours", 0)].get_bool("model.use_enh")
    expected_levels = 1 if scale == "cpu" else 3
    assert confs[("srhand", 0)].get_int("model.subdivision_levels") == expected_levels


def test_missing_model_is_a_clear_error(bench, tmp_path):
    args = bench.parse_args(["--work", str(tmp_path)])
    with pytest.raises(SystemExit, match="sr_liif/giif.pth: no LIIF checkpoint"):
        bench.srhand_jobs(args, tmp_path, ["liif_xhand"])


def test_mean_and_spread(bench):
    assert bench._mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert bench._mean_std([None, 2.0]) == (2.0, None)
    assert bench._fmt({"mean": 2.0, "std": 1.0}, 2) == "2.00 ± 1.00"
