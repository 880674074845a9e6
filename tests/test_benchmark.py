"""scripts/benchmark.py builds every row from the project's entry scripts and configs: each command it
would run (both scales) names an existing config and only keys that config's schema knows."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from utils.bench import claims, plan, report, runner, runstore
from utils.bench.claims_table import INPUT_MANO_LABEL
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
    args = bench.parse_args(
        ["--scale", scale, "--work", str(tmp_path), "--seeds", "0", "1", "--sr_seeds", "0", "3"]
    )
    assert args.giif_model == str(tmp_path / "sr_disc" / "giif.pth")
    sr = plan.sr_jobs(args, tmp_path)
    assert [(name, seed, path.name) for name, seed, path, _ in sr] == [
        ("liif", 0, "sr_liif"),
        ("giif", 0, "sr_giif"),
        ("disc", 0, "sr_disc"),
        ("giif_noadv", 0, "sr_giif_noadv"),
        ("liif", 3, "sr_liif_s3"),
        ("giif", 3, "sr_giif_s3"),
        ("disc", 3, "sr_disc_s3"),
        ("giif_noadv", 3, "sr_giif_noadv_s3"),
    ]
    confs = [_load(cmd) for _, _, _, cmd in sr]
    for (_, seed, _, _), conf in zip(sr, confs, strict=True):
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
        assert conf.get_string("giif_model").endswith(
            "sr_liif/giif.pth" if key == "liif_xhand" else "sr_disc/giif.pth"
        )
    w = {key: confs[(key, 0)] for key in ("ft_con", "ft_con_wav", "srhand")}
    assert (
        w["ft_con"].get_float("finetune.weights.wavelet"),
        w["ft_con"].get_float("finetune.weights.disc"),
    ) == (0, 0)
    assert (
        w["ft_con_wav"].get_float("finetune.weights.wavelet")
        > 0
        == w["ft_con_wav"].get_float("finetune.weights.disc")
    )
    assert (
        w["srhand"].get_float("finetune.weights.wavelet") > 0
        and w["srhand"].get_float("finetune.weights.disc") > 0
    )
    assert confs[("srhand_noisy", 0)].get_float("data.mano_noise.pose_std") > 0
    assert confs[("srhand", 0)].get_float("data.mano_noise.pose_std") == 0
    # the synthetic config refines the MANO fit; the paper's rows run the paper's method
    assert not confs[("srhand", 0)].get_bool("refine.enabled") and not confs[("hr_ours", 0)].get_bool(
        "refine.enabled"
    )
    assert confs[("srhand_refine", 0)].get_bool("refine.enabled") and confs[("hr_ours_refine", 0)].get_bool(
        "refine.enabled"
    )
    assert not confs[("giif_xhand", 0)].get_bool("model.use_enh") and confs[("giif_ours", 0)].get_bool(
        "model.use_enh"
    )
    expected_levels = 1 if scale == "cpu" else 3
    assert confs[("srhand", 0)].get_int("model.subdivision_levels") == expected_levels


def test_missing_model_is_a_clear_error(bench, tmp_path):
    args = bench.parse_args(["--work", str(tmp_path)])
    with pytest.raises(SystemExit, match="sr_liif/giif.pth: no LIIF checkpoint"):
        bench.srhand_jobs(args, tmp_path, ["liif_xhand"])


def test_mean_and_spread(bench):
    assert bench._mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert bench._mean_std([None, 2.0]) == (2.0, None)
    assert bench._mean_std([float("nan"), 1.0, 3.0]) == (2.0, 2.0**0.5)  # undefined for one run: skipped
    assert bench._mean_std([float("nan")]) == (None, None)
    assert report._fmt({"mean": 2.0, "std": 1.0}, 2) == "2.00 ± 1.00"


# ---------------------------------------------------------------------------------------------- run store


def test_medium_commands_load_their_configs(bench, tmp_path):
    args = bench.parse_args(["--scale", "medium", "--work", str(tmp_path), "--seeds", "0", "--sr_seeds", "0"])
    assert args.data.endswith("data/synthetic_medium") and args.results_stem == "results_medium"
    defaults = bench.parse_args(["--scale", "medium"])
    assert defaults.sr_seeds == [0, 1, 2] and defaults.sections == ["sr", "srhand", "ablation"]
    assert bench.parse_args([]).sr_seeds == [0, 1, 2] and "noise" in bench.parse_args([]).sections
    assert bench.parse_args(["--scale", "paper"]).sr_seeds == [0, 1]
    for _, seed, _, cmd in plan.sr_jobs(args, tmp_path):
        conf = _load(cmd)
        assert conf.get_int("data.hr_size") == 256 and conf.get_int("seed") == seed
    keys = [key for table in bench.TABLES.values() for key in table[0]]
    for _, _, _, cmd in bench.srhand_jobs(args, tmp_path, keys, check_models=False):
        conf = _load(cmd)
        assert (conf.get_int("data.hr_size"), conf.get_int("data.lr_size")) == (256, 16)
        assert conf.get_int("model.subdivision_levels") == 2


def _fake_meta(root: Path, **config) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    meta = {
        "generator": "datasets.synthetic",
        "config": {"seed": 0, "hr_size": 128, "mano_dir": "/home/x/mano", **config},
        "hand_model": "/abs/path/hand.npz",
    }
    (root / "synthetic_meta.json").write_text(json.dumps(meta))
    return root


def test_key_is_stable_and_sensitive(bench, tmp_path):
    """Same run from another checkout/work folder/data folder: same key; any computed setting: another key."""

    def key_of(work: Path, data: Path, extra=(), seed=0):
        args = bench.parse_args(["--work", str(work), "--data", str(data), "--seeds", str(seed)])
        _, _, refs = bench.sr_plan(args, work)
        _, _, _, cmd = bench.srhand_jobs(args, work, ["srhand"], check_models=False)[0]
        return bench.job_key(args, cmd + [a for item in extra for a in ("--set", item)], seed, refs)

    a = key_of(tmp_path / "w1", _fake_meta(tmp_path / "d1"))
    b = key_of(tmp_path / "elsewhere" / "w2", _fake_meta(tmp_path / "d2", mano_dir="/other/mano"))
    assert runstore.key_hash(a) == runstore.key_hash(b)
    assert "data_path" not in a["config"]["data"] and "exp_name" not in a["config"]
    assert (
        a["inputs"]["giif_model"].startswith("run:") and a["data"]["settings"]["config"]["mano_dir"] == "mano"
    )
    assert a["version"] == runstore.KEY_VERSION == 2 and a["data"]["fingerprint"].startswith("sha256:")
    # Same generator settings, different content (an image byte): another key, for every run on it.
    other = _fake_meta(tmp_path / "d4")
    (other / "images").mkdir()
    (other / "images" / "image0.jpg").write_bytes(b"\xff\xd8 other pixels")
    changed = [
        key_of(tmp_path / "w1", _fake_meta(tmp_path / "d1"), ["train.epochs=31"]),
        key_of(tmp_path / "w1", _fake_meta(tmp_path / "d1"), seed=1),
        key_of(tmp_path / "w1", _fake_meta(tmp_path / "d3", hr_size=256)),
        key_of(tmp_path / "w1", _fake_meta(tmp_path / "d1"), ["model.use_enh=false"]),
        key_of(tmp_path / "w1", other),
    ]
    assert changed[-1]["data"]["settings"] == a["data"]["settings"]
    assert changed[-1]["inputs"] != a["inputs"]  # the SR runs it starts from read those captures too
    hashes = {runstore.key_hash(k) for k in [a, *changed]}
    assert len(hashes) == 6
    # Upstream: another SR step count changes the GIIF run's key, hence every main.py key built on it.
    args = bench.parse_args(["--work", str(tmp_path / "w1"), "--data", str(tmp_path / "d1"), "--steps", "10"])
    _, _, refs = bench.sr_plan(args, tmp_path / "w1")
    _, _, _, cmd = bench.srhand_jobs(args, tmp_path / "w1", ["srhand"], check_models=False)[0]
    assert bench.job_key(args, cmd, 0, refs)["inputs"] != a["inputs"]


def test_trim_metrics():
    metrics = {
        "p2p_mm": 1.0,
        "p2p_mm_per_frame": {"3": 1.0},
        "eval_frames": list(range(100)),
        "render": {"all": {"psnr_masked": 20.0}},
        "eval_cameras": ["a", "b"],
    }
    assert runstore.trim_metrics(metrics) == {
        "p2p_mm": 1.0,
        "eval_frames": {"trimmed_list": 100},
        "render": {"all": {"psnr_masked": 20.0}},
        "eval_cameras": ["a", "b"],
    }


def _fake_srhand_metrics(psnr: float, p2p: float, mano: float = 0.3, paper: bool = False) -> dict:
    m = {
        "perceptual_key": "stlpipsalex",
        "perceptual": "ST-LPIPS-alex",
        "sr": {"all": {"psnr_masked": psnr + 1, "stlpipsalex_masked": 0.1}},
        "render": {"all": {"psnr_masked": psnr, "stlpipsalex_masked": 0.09}},
        "p2p_mm": p2p,
        "p2p_mm_mano": mano,
        "p2p_mm_per_frame": {"1": p2p},
        "inconsistency": {"sr": 0.01},
        "mano_noise": None,
    }
    if paper:
        m["paper_protocol"] = {
            "render": {"psnr": psnr - 1, "ssim": 0.8, "stlpipsalex": 0.05},
            "sr": {"psnr": psnr + 2, "ssim": 0.7, "stlpipsalex": 0.06},
            "inconsistency_windowed": 0.02,
            "p2p_truth_to_recon_mm": p2p / 2,
            "p2p_mano_truth_to_recon_mm": mano / 2,
        }
    return m


def test_reuse_skip_and_revision_mix(bench, tmp_path, monkeypatch):
    """Stored runs are not run again (on another work folder too), missing ones are run and stored, --fresh re-runs
    all; the table says which revisions it mixes."""
    data = _fake_meta(tmp_path / "data")
    store = tmp_path / "store"
    ran = []

    def fake_run(cmd, log, env=None):
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        seed = int(next(a for a in cmd if a.startswith("seed=")).split("=")[1])
        enh = "model.use_enh=false" not in cmd
        (out / "metrics.json").write_text(
            json.dumps(_fake_srhand_metrics(20.0 + seed + enh, 1.0 - 0.1 * enh))
        )
        ran.append(out.name)
        return 1.0

    revisions = iter([("aaaaaaa", False)] * 4 + [("bbbbbbb", True)] * 100)
    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setattr(bench.runstore, "git_revision", lambda repo: next(revisions))
    (tmp_path / "giif.pth").write_bytes(b"giif")
    argv = [
        "--data",
        str(data),
        "--store",
        str(store),
        "--seeds",
        "0",
        "1",
        "--jobs",
        "1",
        "--giif_model",
        str(tmp_path / "giif.pth"),
        "--liif_model",
        str(tmp_path / "giif.pth"),
    ]
    monkeypatch.setitem(bench.TABLES, "srhand", (["giif_ours", "srhand"], {}))
    args = bench.parse_args([*argv, "--work", str(tmp_path / "w1")])
    first = bench.srhand_table(args, Path(args.work), "srhand")
    assert sorted(ran) == ["giif_ours_s0", "giif_ours_s1", "srhand_s0", "srhand_s1"]
    assert first["revisions"] == [("aaaaaaa", 4)] and first["executed"] == 4
    stored = sorted(p.relative_to(store).as_posix() for p in store.rglob("*.json"))
    assert len(stored) == 4 and all(p.startswith("cpu/srhand/") for p in stored)
    entry = json.loads(next(store.rglob("*.json")).read_text())
    assert set(entry) >= {"key", "revision", "dirty", "date", "machine", "threads", "metrics"}
    assert "p2p_mm_per_frame" not in entry["metrics"]
    assert first["rows"][INPUT_MANO_LABEL]["summary"]["p2p_mm"]["mean"] == pytest.approx(0.3)

    # Another machine / work folder: everything reused, nothing run.
    ran.clear()
    args = bench.parse_args([*argv, "--work", str(tmp_path / "w2")])
    again = bench.srhand_table(args, Path(args.work), "srhand")
    assert ran == [] and again["executed"] == 0 and again["rows"].keys() == first["rows"].keys()
    # A changed config misses the store for the rows it touches; the table then mixes two revisions.
    monkeypatch.setitem(
        bench.SRHAND_RUNS, "srhand", ("SRHand", ["sr_source=giif_finetuned", "train.epochs=31"], "giif")
    )
    mixed = bench.srhand_table(args, Path(args.work), "srhand")
    assert sorted(ran) == ["srhand_s0", "srhand_s1"]
    assert mixed["revisions"] == [("aaaaaaa", 2), ("bbbbbbb+dirty", 2)]
    text = "\n".join(bench.srhand_markdown(mixed))
    assert "mixes 2 revisions: `aaaaaaa` (2 runs), `bbbbbbb+dirty` (2 runs)" in text
    assert "input MANO mesh (no reconstruction) | - | - | - | - | 0.300 ± 0.000 | - |" in text
    assert "paper protocol" not in text
    # --fresh: every run again.
    ran.clear()
    args = bench.parse_args([*argv, "--work", str(tmp_path / "w2"), "--fresh"])
    bench.srhand_table(args, Path(args.work), "srhand")
    assert len(ran) == 4


def test_paper_protocol_table(bench):
    runs = {seed: bench._row_metrics(_fake_srhand_metrics(20.0 + seed, 1.0, paper=True)) for seed in (0, 1)}
    rows = {
        "SRHand": bench._summarise("srhand", runs),
        "GIIF w/o ftd. + XHand": bench._summarise("giif_xhand", runs),
    }
    text = "\n".join(bench.srhand_markdown({"rows": rows, "seeds": [0, 1]}))
    assert "| row (paper protocol) |" in text
    assert "| SRHand | 22.50 ± 0.71 | 0.700 ± 0.000 | 0.0600 ± 0.0000 | 19.50 ± 0.71 |" in text
    assert "| input MANO mesh (no reconstruction) | - | - | - | - | - | - | 0.150 ± 0.000 | - |" in text


def test_speed_columns(bench):
    runs = [
        [
            {
                "res": 256,
                "faces": 9,
                "ms_forward": f,
                "ms_forward_backward": 2 * f,
                "ms_lower_bound": f,
                "ratio_to_lower_bound": 1.4 + f / 100,
            }
        ]
        for f in (10.0, 12.0)
    ]
    merged = bench.merge_render_runs(runs)
    assert merged == [
        {
            "res": 256,
            "faces": 9,
            "runs": 2,
            "ms_forward": [10.0, 12.0],
            "ms_forward_backward": [20.0, 24.0],
            "ms_lower_bound": [10.0, 12.0],
            "ratio_to_lower_bound": [1.5, 1.52],
        }
    ]
    decode = {
        "threads": 2,
        "results": [
            {
                "size": "cpu",
                "model": "giif",
                "params_M": 0.26,
                "out": 256,
                "encode_s": 0.01,
                "decode_s": 0.1,
                "decode_MPps": 0.6,
                "query_s": 0.09,
                "reference_query_s": 0.18,
                "query_speedup": 2.0,
            }
        ],
    }
    text = "\n".join(bench.speed_markdown({"render": merged, "giif_decode": decode}))
    assert "| 256 | 9 | 10.0-12.0 | 20.0-24.0 | 10.0-12.0 | 1.50-1.52 |" in text
    assert "| cpu GIIF | 0.26 | 256x256 | 2 | 10 | 180 | 90 | 2.00x | - | 0.600 |" in text
    old = "\n".join(
        bench.speed_markdown(
            {"render": [{"res": 256, "faces": 9, "ms_forward": 1.0, "ms_forward_backward": 2.0}]}
        )
    )
    assert "| 256 | 9 | 1.0 | 2.0 | - | - |" in old
    steps = {
        "srhand_step_cpu": {
            "config": "cpu",
            "vertices": 3093,
            "resolution": [128, 128],
            "threads": 2,
            "rows": [
                {
                    "part": "finetune",
                    "views": 4,
                    "ms": 250.0,
                    "peak_mib": 900.0,
                    "reference_ms": 1000.0,
                    "ratio": 0.25,
                },
                {"part": "train", "views": 4, "ms": 200.0, "peak_mib": 900.0},
                {
                    "part": "GIIF training step",
                    "views": 8,
                    "ms": 50.0,
                    "peak_mib": 900.0,
                    "reference_ms": 100.0,
                    "config": "giif.conf",
                    "px": 48,
                    "vertices": None,
                },
            ],
            "checks": {
                "train": {"loss_max_rel_diff": 2e-7, "grad_max_rel_diff": 3e-7},
                "finetune": {"sr_bitwise_equal": True, "sr_max_abs_diff": 0.0},
            },
        }
    }
    text = "\n".join(bench.speed_markdown(steps))
    assert "| cpu | 3093 | 128 | finetune | 4 | 2 | 250 | 900 | 1000 | 0.25 |" in text
    assert "| cpu | 3093 | 128 | train | 4 | 2 | 200 | 900 | - | - |" in text
    assert "| giif.conf | - | 48 | GIIF training step | 8 | 2 | 50 | 900 | 100 | 0.50 |" in text
    assert "loss terms equal to 2.0e-07 and parameter gradients to 3.0e-07" in text
    assert "masked GIIF decode bitwise equal to the full decode" in text


# ---------------------------------------------------------------------------------------------- claims
def test_paired_statistics_by_hand():
    d = claims.paired_differences({0: 3.0, 1: 5.0, 2: 4.0, 3: None}, {"0": 1.0, "1": 2.0, "2": 3.0, "3": 1.0})
    assert d == {"0": 2.0, "1": 3.0, "2": 1.0}
    s = claims.paired_stats(d)
    # mean 2, sample variance ((0)^2 + 1^2 + (-1)^2) / 2 = 1, t = 2 / (1 / sqrt 3) = 2 sqrt 3
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0) and s.t == pytest.approx(2 * 3**0.5)
    assert claims.verdict(s, +1) == "holds" and claims.verdict(s, -1) == "reversed"
    small = claims.paired_stats([0.5, -0.5, 1.0])  # mean 1/3, std sqrt(7/12) = 0.764
    assert small.std == pytest.approx((7 / 12) ** 0.5)
    assert claims.verdict(small, +1) == claims.verdict(small, -1) == "within noise"
    assert claims.verdict(claims.paired_stats([2.0]), +1) == "n/a"
    assert claims.verdict(claims.paired_stats([1e-5, 1.1e-5]), +1) == "holds"
    assert claims.verdict(claims.paired_stats([1e-5, 1.1e-5]), +1, min_effect=1e-3) == "within noise"
    with pytest.raises(ValueError, match="sign must be"):
        claims.verdict(s, 0)


def test_a_difference_below_the_metrics_own_standard_error_is_within_noise():
    """Issue 26: a claim is within noise when its paired mean is below the standard error the metric's own
    estimator puts on it, whatever the seed spread says; the SE is shown with the difference."""
    claim = claims.Claim("A beats B", "p2p_mm", ("t", "a"), ("t", "b"), -1)

    def rows(se):
        a = {str(s): {"p2p_mm": 1.0 + 0.01 * s, "p2p_mm_se": se} for s in range(3)}
        b = {str(s): {"p2p_mm": 1.5 + 0.01 * s, "p2p_mm_se": se} for s in range(3)}
        return {("t", "a"): a, ("t", "b"): b}

    sure = claims.judge(claim, rows(0.5))  # metric SE sqrt(3 * 0.5) / 3 = 0.41 < 0.5
    assert sure["metric_se"] == pytest.approx((3 * 0.5) ** 0.5 / 3) and sure["verdict"] == "holds"
    assert sure["std"] == pytest.approx(0.0, abs=1e-12)  # the seeds agree exactly ...
    noisy = claims.judge(claim, rows(0.7))  # ... but the metric's own noise is larger than the difference
    assert noisy["metric_se"] > 0.5 and noisy["verdict"] == "within noise"
    assert "(SE 0.000, t -inf, n=3; metric SE 0.5715)" in claims.format_difference(noisy, 3)
    partly = rows(0.7)
    partly[("t", "a")]["1"]["p2p_mm_se"] = None  # a run without its own SE: none for the claim
    assert claims.judge(claim, partly)["metric_se"] is None


def _origin(data: str, machine: str = "CPU A") -> dict:
    return {"machine": machine, "data": data, "key_hash": f"{data}-{machine}"}


def test_claims_table(bench):
    def row(key, p2p_by_seed, mano=0.3):
        runs = {
            str(s): {"p2p_mm": v, "p2p_mm_mano": mano, "render_psnr": 20.0, "perceptual": "x"}
            for s, v in p2p_by_seed.items()
        }
        return {"key": key, "seeds": runs, "provenance": {str(s): _origin("sha256:aa") for s in p2p_by_seed}}

    results = {
        "srhand": {
            "result": {
                "rows": {
                    "SRHand": row("srhand", {0: 1.0, 1: 1.2, 2: 1.1}),
                    "w/o": row("giif_ours", {0: 1.5, 1: 1.6, 2: 1.7}),
                }
            }
        }
    }
    out = bench.section_claims({"cpu": results, "medium": {}})
    by = {(c["name"], c["metric"]): c for c in out["claims"]}
    ftd = by[("fine-tuning (w/ vs w/o ftd.)", "p2p_mm")]["scales"]
    assert ftd["cpu"]["mean"] == pytest.approx(-0.5) and ftd["cpu"]["std"] == pytest.approx(0.1)
    assert ftd["cpu"]["verdict"] == "holds" and ftd["medium"]["verdict"] == "n/a"
    mano = by[("SRHand vs the input MANO mesh", "p2p_mm")]["scales"]["cpu"]
    assert mano["mean"] == pytest.approx(0.8) and mano["verdict"] == "reversed"
    text = "\n".join(bench.claims_markdown(out))
    # the paired mean with its standard error, t and n; these runs report no P2P standard error of their own
    old_noise = "i.i.d. P2P of before issue 26: metric SE not measured, about 0.022 mm per frame"
    assert f"| -0.500 ± 0.100 (SE 0.058, t -8.7, n=3; {old_noise}) | holds | not run | - |" in text
    # a scale that ran without a claim's rows (the medium scale has no identity section) says so
    assert "| p2p_mm (lower) | rows not run | - | not run | - |" in text
    assert "cpu: runs by machine: `CPU A` (1 run)." in text  # one (fake) key hash for all of them


def test_claims_pair_only_runs_on_the_same_data(bench):
    """A claim is judged only when each seed's two runs share their data: the same content fingerprint, or for
    legacy entries the same machine and generator settings; otherwise it says which data differ, or that a
    row's data is unknown (results written before provenance, not found in the run store)."""

    def row(key, p2p_by_seed, data):
        return {
            "key": key,
            "seeds": {
                str(s): {"p2p_mm": v, "p2p_mm_mano": 0.3, "perceptual": "x"} for s, v in p2p_by_seed.items()
            },
            "provenance": {
                str(s): (_origin(*d) if d else None) for s, d in zip(p2p_by_seed, data, strict=True)
            },
        }

    def judged(better_data, worse_data):
        rows = {
            "SRHand": row("srhand", {0: 1.0, 1: 1.2, 2: 1.1}, better_data),
            "w/o": row("giif_ours", {0: 1.5, 1: 1.6, 2: 1.7}, worse_data),
        }
        out = bench.section_claims({"cpu": {"srhand": {"result": {"rows": rows}}}})
        claim = next(
            c for c in out["claims"] if c["name"].startswith("fine-tuning") and c["metric"] == "p2p_mm"
        )
        return claim["scales"]["cpu"], "\n".join(bench.claims_markdown(out))

    legacy = ("legacy:Intel(R) Xeon(R) Processor:1a2b3c4d", "Intel(R) Xeon(R) Processor")
    same = judged([legacy] * 3, [legacy] * 3)[0]
    assert same["verdict"] == "holds" and same["n"] == 3 and "unpaired" not in same
    new = ("sha256:" + "ab" * 32, "AMD EPYC")
    result, text = judged([legacy] * 3, [legacy, legacy, new])  # seed 2's w/o ftd. run redone on other data
    assert result["verdict"] == claims.DATA_DIFFER and result["mean"] is None
    assert result["unpaired"] == {"2": [legacy[0], new[0]]}
    assert (
        "| seed 2: legacy data of `Intel(R) Xeon(R) Processor` (settings `1a2b3c4d`) vs data `abababababab` "
        "| not paired: data differ |" in text
    )
    assert "mixes 2 machines" in text
    # Two machines, same captures (equal fingerprints): paired, and marked as pairs across machines.
    across, text = judged([new] * 3, [(new[0], "Intel(R) Xeon(R) Processor")] * 3)
    assert across["verdict"] == "holds" and across["machines"] == ["AMD EPYC", "Intel(R) Xeon(R) Processor"]
    assert "(pairs across 2 machines: `AMD EPYC`, `Intel(R) Xeon(R) Processor`) | holds |" in text
    assert "machines" not in same
    # Legacy entries of two machines with the same settings: not known to share data.
    other = ("legacy:AMD EPYC:1a2b3c4d", "AMD EPYC")
    assert judged([legacy] * 3, [other] * 3)[0]["verdict"] == claims.DATA_DIFFER
    unknown = judged([legacy] * 3, [legacy, None, legacy])[0]
    assert unknown["verdict"] == claims.DATA_UNKNOWN and unknown["unpaired"] == {"1": [legacy[0], None]}


def test_stored_sr_runs_rerun_for_missing_checkpoints(bench, tmp_path, monkeypatch):
    """A cut-off benchmark moved to another machine: the SR runs are in the store but their checkpoints are
    not; main.py rows still to run get the SR runs they need re-run first (and only those)."""
    data = _fake_meta(tmp_path / "data")
    ran = []

    def fake_run(cmd, log, env=None):
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        if cmd[1] == "main.py":
            metrics = _fake_srhand_metrics(20.0, 1.0)
        else:
            scores = {"x16": {"psnr_masked": 20.0 + 0.01 * len(ran), "ssim_masked": 0.5}}  # another machine
            metrics = {
                "results": {"giif": scores, "bicubic": scores},
                "perceptual": None,
                "num_images": 1,
                "degradation": "nearest",
            }
            (out / "giif.pth").write_bytes(b"g")
            (out / "disc.pth").write_bytes(b"d")
        (out / "metrics.json").write_text(json.dumps(metrics))
        ran.append(out.name)
        return 1.0

    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setattr(bench.runstore, "git_revision", lambda repo: ("aaaaaaa", False))
    monkeypatch.setitem(bench.TABLES, "srhand", (["giif_ours"], {}))
    argv = ["--data", str(data), "--store", str(tmp_path / "store"), "--seeds", "0", "--sr_seeds", "0"]
    args = bench.parse_args([*argv, "--work", str(tmp_path / "w1")])
    bench.section_sr(args, Path(args.work))
    assert ran == ["sr_liif", "sr_giif", "sr_disc", "sr_giif_noadv"]
    ran.clear()
    args = bench.parse_args([*argv, "--work", str(tmp_path / "w2")])
    result = bench.section_sr(args, Path(args.work))
    assert result["executed"] == 0 and ran == []
    # each row names its runs' residual mode (the CPU configs: GIIF bilinear, LIIF the reference's none)
    assert {label.split(" (")[0]: mode for label, mode in result["residual"].items()} == {
        "LIIF": "none",
        "GIIF w/o D": "bilinear",
        "GIIF + D": "bilinear",
    }
    assert any(
        line.startswith("| GIIF + D (") and "| bilinear |" in line for line in report.sr_markdown(result)
    )
    bench.srhand_table(args, Path(args.work), "srhand")
    assert ran == ["sr_giif", "sr_disc", "giif_ours_s0"]
    # The re-runs did not replace what the stored entries hold: they are appended to the entries' reruns.
    giif = json.loads(next((tmp_path / "store" / "cpu" / "sr" / "giif").glob("seed0-*.json")).read_text())
    assert giif["metrics"]["results"]["giif"]["x16"]["psnr_masked"] == 20.01
    assert [r["metrics"]["results"]["giif"]["x16"]["psnr_masked"] for r in giif["reruns"]] == [20.0]
    # A checkpoint on disk that another run wrote (its folder's marker names another key) is not used.
    ran.clear()
    for name in ("sr_giif", "sr_disc"):
        shutil.copytree(tmp_path / "w2" / name, tmp_path / "w3" / name)
    (tmp_path / "w3" / "sr_disc" / runner.RUN_MARKER).write_text('{"key_hash": "another run"}')
    monkeypatch.setitem(bench.TABLES, "srhand", (["giif_ours", "srhand"], {}))
    args = bench.parse_args([*argv, "--work", str(tmp_path / "w3")])
    bench.srhand_table(args, Path(args.work), "srhand")
    assert ran == ["sr_disc", "srhand_s0"]


def test_identity_section(bench, tmp_path, monkeypatch):
    """Table 4(a): XHand vs Ours on the Table 1 subject (the same stored runs) and on a second identity, whose
    captures are generated with another seed when missing and key their own runs; its claims are judged."""
    data = _fake_meta(tmp_path / "data")
    ran, generated = [], []

    def fake_run(cmd, log, env=None):
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        second = any(a.startswith("data.data_path=") and a.endswith("_id2") for a in cmd)
        seed = int(next(a for a in cmd if a.startswith("seed=")).split("=")[1])
        enh = "model.use_enh=false" not in cmd
        metrics = _fake_srhand_metrics(20.0 + seed + enh + 5 * second, 1.0 - 0.1 * enh, paper=True)
        (out / "metrics.json").write_text(json.dumps(metrics))
        ran.append(f"{out.parent.name}/{out.name}")
        return 1.0

    def fake_generate(cmd, log, env=None):
        generated.append(cmd[1:])
        _fake_meta(Path(cmd[cmd.index("--out") + 1]), seed=int(cmd[cmd.index("--seed") + 1]))
        return 1.0

    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setattr(bench, "run", fake_generate)
    monkeypatch.setattr(bench.runstore, "git_revision", lambda repo: ("aaaaaaa", False))
    (tmp_path / "giif.pth").write_bytes(b"giif")
    argv = [
        "--data",
        str(data),
        "--store",
        str(tmp_path / "store"),
        "--seeds",
        "0",
        "1",
        "--jobs",
        "1",
        "--giif_model",
        str(tmp_path / "giif.pth"),
        "--work",
        str(tmp_path / "w"),
    ]
    args = bench.parse_args(argv)
    monkeypatch.setitem(bench.TABLES, "srhand", (["ftd_xhand", "srhand"], {}))
    bench.srhand_table(args, Path(args.work), "srhand")  # Table 1 first: identity 1's runs are in the store
    ran.clear()
    result = bench.section_identity(args, Path(args.work))
    assert generated == [["scripts/make_synthetic.py", "--seed", "1", "--out", str(data) + "_id2"]]
    assert sorted(ran) == [
        "identity2/ftd_xhand_s0",
        "identity2/ftd_xhand_s1",
        "identity2/srhand_s0",
        "identity2/srhand_s1",
    ]
    one, two = result["identities"]["identity 1"], result["identities"]["identity 2"]
    assert one["executed"] == 0 and two["executed"] == 4 and two["subject"]["generator_seed"] == 1
    assert list(two["rows"]) == ["XHand", "Ours"]
    assert two["rows"]["Ours"]["summary"]["render_psnr"]["mean"] == pytest.approx(26.5)
    assert one["rows"]["Ours"]["summary"]["render_psnr"]["mean"] == pytest.approx(21.5)
    # Run again: the second identity's captures exist and its runs are stored.
    ran.clear()
    assert (
        bench.section_identity(args, Path(args.work))["identities"]["identity 2"]["executed"] == 0
        and ran == []
    )

    text = "\n".join(bench.identity_markdown(result))
    assert (
        "| identity 2 (generator seed 1) | Ours | 26.50 ± 0.71 | 0.0900 ± 0.0000 | 25.50 ± 0.71 | 0.800 ± 0.000 | 0.0500 ± 0.0000 | 0.900 ± 0.000 | - | 0.300 ± 0.000 |"
        in text
    )
    assert text.index("identity 2: ") > text.index("| identity 2 (generator seed 1) | Ours")
    claims_out = bench.section_claims({"cpu": {"identity": {"result": result}}})
    by = {(c["name"], c["metric"]): c["scales"]["cpu"] for c in claims_out["claims"]}
    psnr = by[("SRHand vs XHand, second identity", "render_psnr")]
    assert psnr["mean"] == pytest.approx(1.0) and psnr["std"] == pytest.approx(0.0)
    p2p = by[("SRHand vs XHand, second identity", "p2p_mm")]
    assert p2p["mean"] == pytest.approx(-0.1) and p2p["verdict"] == "holds"


def test_static_section(bench, tmp_path, monkeypatch):
    """Table 2's protocol: single-pose captures generated when missing, three rows at x4 (LR 32) and x16 (LR 8)
    and hr + Ours once, every command through the static config's schema, evaluated on held-out cameras."""
    data = _fake_meta(tmp_path / "data")
    cmds, generated = {}, []

    def fake_run(cmd, log, env=None):
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        lr = next((int(a.split("=")[1]) for a in cmd if a.startswith("data.lr_size=")), None)
        seed = int(next(a for a in cmd if a.startswith("seed=")).split("=")[1])
        metrics = _fake_srhand_metrics(20.0 + seed + (lr or 64) / 8, 1.0, paper=True)
        (out / "metrics.json").write_text(json.dumps(metrics))
        cmds[f"{out.parent.name}/{out.name}"] = cmd
        return 1.0

    def fake_generate(cmd, log, env=None):
        generated.append(cmd[1:])
        _fake_meta(Path(cmd[cmd.index("--out") + 1]), num_views=40)
        return 1.0

    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setattr(bench, "run", fake_generate)
    monkeypatch.setattr(bench.runstore, "git_revision", lambda repo: ("aaaaaaa", False))
    (tmp_path / "giif.pth").write_bytes(b"giif")
    args = bench.parse_args(
        [
            "--data",
            str(data),
            "--store",
            str(tmp_path / "store"),
            "--seeds",
            "0",
            "1",
            "--jobs",
            "1",
            "--giif_model",
            str(tmp_path / "giif.pth"),
            "--liif_model",
            str(tmp_path / "giif.pth"),
            "--work",
            str(tmp_path / "w"),
        ]
    )
    result = bench.section_static(args, Path(args.work))
    assert generated == [
        ["scripts/make_synthetic.py", *bench.STATIC_DATA_ARGS, "--out", str(data) + "_static"]
    ]
    assert sorted(cmds) == sorted(
        [
            f"static_x{f}/{k}_s{s}"
            for f in (4, 16)
            for k in ("bicubic_ours", "liif_xhand", "srhand")
            for s in (0, 1)
        ]
        + ["static_hr/hr_ours_s0", "static_hr/hr_ours_s1"]
    )
    for name, cmd in cmds.items():
        conf = _load(cmd)
        assert (
            conf.get_string("data.data_path") == str(data) + "_static"
            and conf.get_int("data.num_views") == 40
        )
        assert conf.get_int("data.num_frames") == 1 and len(conf.get_list("eval.cameras")) == 8
        assert not conf.get_bool("eval.exclude_fit_frames")
        assert (
            conf.get_int("data.lr_size")
            == {"static_x4": 32, "static_x16": 8, "static_hr": 16}[name.split("/")[0]]
        )
    assert result["factors"]["x16"]["rows"]["SRHand (GIIF w/ ftd. + Ours)"]["summary"]["render_psnr"][
        "mean"
    ] == pytest.approx(21.5)
    text = "\n".join(bench.static_markdown(result))
    assert "| x4 | SRHand (GIIF w/ ftd. + Ours) | 25.50 ± 0.71 | 24.50 ± 0.71 |" in text
    assert "| HR | hr + Ours (upper bound) |" in text


def test_versus_input_mano_column():
    """Per-seed P2P minus the run's own input-MANO P2P: mean ± std, size in stds, side of the input mesh."""

    def row(p2p, mano):
        return {
            "key": "x",
            "seeds": {
                str(s): {"p2p_mm": a, "p2p_mm_mano": b}
                for s, (a, b) in enumerate(zip(p2p, mano, strict=True))
            },
        }

    assert (
        report.versus_input_mano(row([1.0, 1.2, 1.1], [1.5, 1.5, 1.5])) == "-0.400 ± 0.100 (4.0 std, closer)"
    )
    assert (
        report.versus_input_mano(row([2.0, 1.0, 1.6], [1.5, 1.5, 1.5]))
        == "+0.033 ± 0.503 (0.1 std, within noise)"
    )
    assert (
        report.versus_input_mano(row([2.0, 2.2, 2.1], [1.5, 1.6, 1.5])) == "+0.567 ± 0.058 (9.8 std, farther)"
    )
    assert report.versus_input_mano({**row([1.0, 1.0], [1.5, 1.5]), "reference": True}) == "-"
    text = "\n".join(
        report.srhand_markdown(
            {
                "rows": {
                    "SRHand": {
                        **row([1.0, 1.2, 1.1], [1.5, 1.5, 1.5]),
                        "key": "srhand",
                        "perceptual": "x",
                        "summary": {"p2p_mm_mano": {"mean": 1.5, "std": 0.0}},
                    }
                },
                "seeds": [0, 1, 2],
            }
        )
    )
    assert "| -0.400 ± 0.100 (4.0 std, closer) |" in text and "P2P - input MANO, paired (mm)" in text


def test_rows_option_limits_the_main_rows(bench, tmp_path, monkeypatch):
    data = _fake_meta(tmp_path / "data")
    ran = []

    def fake_run(cmd, log, env=None):
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(_fake_srhand_metrics(20.0, 1.0)))
        ran.append(out.name)
        return 1.0

    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setattr(bench.runstore, "git_revision", lambda repo: ("aaaaaaa", False))
    (tmp_path / "giif.pth").write_bytes(b"giif")
    args = bench.parse_args(
        [
            "--data",
            str(data),
            "--store",
            str(tmp_path / "store"),
            "--seeds",
            "0",
            "--jobs",
            "1",
            "--giif_model",
            str(tmp_path / "giif.pth"),
            "--work",
            str(tmp_path / "w"),
            "--rows",
            "hr_ours",
            "srhand",
        ]
    )
    rows = bench.srhand_table(args, Path(args.work), "srhand")["rows"]
    assert sorted(ran) == ["hr_ours_s0", "srhand_s0"]
    assert INPUT_MANO_LABEL in rows and len(rows) == 3
    with pytest.raises(SystemExit):
        bench.parse_args(["--rows", "no_such_row"])


def test_stage2_key_ignores_the_superseded_config_checkpoint(bench, tmp_path):
    """main_disc.py reads --model_path; the config's giif_model (used only without it) must not key the run,
    or a default checkpoint appearing on the machine (e.g. after `make demo`) would orphan every stored run."""
    data = _fake_meta(tmp_path / "data")
    args = bench.parse_args(["--work", str(tmp_path / "w"), "--data", str(data), "--sr_seeds", "0"])
    jobs = plan.sr_jobs(args, tmp_path / "w")
    _, _, _, cmd = next(j for j in jobs if j[0] == "disc")
    cmd = [*cmd, "--set", f"giif_model={tmp_path / 'default_giif.pth'}"]
    before = bench.job_key(args, cmd, 0, {})
    (tmp_path / "default_giif.pth").write_bytes(b"another checkpoint")
    after = bench.job_key(args, cmd, 0, {})
    assert before == after and "giif_model" not in after["inputs"] and "model_path" in after["inputs"]


LEGACY_MACHINE = "Intel(R) Xeon(R) Processor"  # the committed CPU and medium entries' machine


# The evaluation settings of the committed main.py runs (before issue 26): i.i.d. P2P of 5,000 points.
OLD_P2P = ("eval.p2p_estimator=iid", "eval.p2p_samples=5000")


def _legacy_lookups(
    bench, monkeypatch, tmp_path, argv: list[str], cpu: str, extra: tuple = OLD_P2P
) -> tuple[list, list]:
    """(found, missing) lookups of the CPU tables' runs, keyed from today's configs (main.py's with the ``--set``
    items ``extra``) on a machine whose CPU is ``cpu``, for captures whose generator settings are the committed
    runs' but whose content is unknown."""
    stored = json.loads(
        next((REPO / "benchmarks" / "runs" / "cpu" / "sr" / "giif").glob("seed0-*.json")).read_text()
    )
    assert stored["key"]["version"] == 1 and stored["machine"] == LEGACY_MACHINE
    monkeypatch.setattr(
        runstore, "data_settings", lambda root: stored["key"]["data"]
    )  # the stored runs' settings
    monkeypatch.setattr(runner, "machine", lambda: {"cpu_model": cpu})
    _fake_meta(tmp_path / "data")  # captures of this machine: their content is not the committed runs'
    args = bench.parse_args(  # the legacy tables' SR seeds: 0, 1
        [
            "--scale",
            "cpu",
            "--work",
            str(tmp_path),
            "--data",
            str(tmp_path / "data"),
            "--sr_seeds",
            "0",
            "1",
            *argv,
        ]
    )
    store, accepted = runstore.RunStore(REPO / "benchmarks" / "runs"), runner.legacy_machines(args)
    found, missing = [], []
    sr, sr_keys, refs = bench.sr_plan(args, tmp_path)
    for j, k, twin in zip(sr, sr_keys, runner.legacy_keys(args, sr_keys), strict=True):
        entry = store.find("sr", j[0], k, twin, accepted)
        (found if entry else missing).append((f"sr/{j[0]} seed {j[1]}", entry))
    for table in ("srhand", "ablation", "noise"):
        jobs = bench.srhand_jobs(args, tmp_path, bench.TABLES[table][0], check_models=False, extra=extra)
        keys = [runner.job_key(args, cmd, seed, refs) for _, seed, _, cmd in jobs]
        for (key, seed, _, _), k, twin in zip(jobs, keys, runner.legacy_keys(args, keys), strict=True):
            entry = store.find("srhand", key, k, twin, accepted)
            (found if entry else missing).append((f"{table}/{key} seed {seed}", entry))
    return found, missing


def _with_argv(parse, extra: list[str]):
    """``parse`` with ``extra`` appended to every command line."""
    return lambda argv=None: parse([*(argv or []), *extra])


def test_committed_cpu_runs_are_found_by_the_current_configs(bench, monkeypatch, tmp_path):
    """The CPU tables' runs, keyed from today's configs and entry scripts, are all in the committed run store
    as legacy entries (key version 1, no data fingerprint), found through their version-1 twins on the machine
    that made them: a new config key that chooses how a run computes rather than what (e.g.
    ``train.perceptual_impl``) must be normalised away (``runstore.MACHINE_KEYS``), or every stored run would be
    orphaned and re-run. On another CPU they are found only when accepted by name (``--legacy_machine``), and
    each found entry says it is legacy, so its data is that machine's captures, not this one's. The main.py runs
    are found with the evaluation they were made with (the i.i.d. P2P estimator: ``eval.p2p_estimator = iid``,
    a neutral value of the key); today's default estimator is another evaluation, so they are not reused for it.
    The SR runs are GIIFs without the residual the CPU configs have since issue 24 (``--sr_set``); with today's
    bilinear residual nothing is found (another method)."""
    found, _ = _legacy_lookups(bench, monkeypatch, tmp_path / "residual", [], LEGACY_MACHINE, extra=())
    assert [name for name, _ in found] == [
        "sr/liif seed 0",
        "sr/liif seed 1",
    ]  # LIIF keeps none; GIIFs are new
    monkeypatch.setattr(
        bench, "parse_args", _with_argv(bench.parse_args, ["--sr_set", "model.args.residual=none"])
    )
    found, missing = _legacy_lookups(bench, monkeypatch, tmp_path / "today", [], LEGACY_MACHINE, extra=())
    assert len(found) == 8 and len(missing) == 3 * (7 + 4 + 2)  # the SR runs; no main.py run is reused
    found, missing = _legacy_lookups(bench, monkeypatch, tmp_path, [], LEGACY_MACHINE)
    assert not missing, f"not found in benchmarks/runs/cpu: {[name for name, _ in missing]}"
    assert len(found) == 8 + 3 * (7 + 4 + 2)
    assert all(runstore.is_legacy(e) and e["machine"] == LEGACY_MACHINE for _, e in found)
    identities = {runstore.data_identity(e) for _, e in found}
    assert len(identities) == 1 and identities.pop().startswith(f"legacy:{LEGACY_MACHINE}:")

    found, missing = _legacy_lookups(bench, monkeypatch, tmp_path / "amd", [], "AMD EPYC")
    assert not found and len(missing) == 8 + 3 * (7 + 4 + 2)  # another CPU's captures: run again, new keys
    argv = ["--legacy_machine", LEGACY_MACHINE]
    found, missing = _legacy_lookups(bench, monkeypatch, tmp_path / "accepted", argv, "AMD EPYC")
    assert not missing and all(runstore.is_legacy(e) for _, e in found)


def test_legacy_entries_reused_only_on_their_machine(bench, tmp_path, monkeypatch):
    """Legacy entries (key version 1, no data fingerprint) are reused on the machine that made them, and the table
    and the claims say so: a row run now on this machine's captures (another data identity) is not paired with
    them. On another CPU they are not reused: every run is made on its captures and the claims pair again."""
    data = _fake_meta(tmp_path / "data")
    ran = []

    def fake_run(cmd, log, env=None):
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        seed = int(next(a for a in cmd if a.startswith("seed=")).split("=")[1])
        ftd = "sr_source=giif_finetuned" in cmd
        (out / "metrics.json").write_text(
            json.dumps(_fake_srhand_metrics(20.0 + seed, 1.5 - 0.5 * ftd + 0.1 * seed))
        )
        ran.append(out.name)
        return 1.0

    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setattr(bench.runstore, "git_revision", lambda repo: ("aaaaaaa", False))
    monkeypatch.setitem(bench.TABLES, "srhand", (["giif_ours", "srhand"], {}))
    (tmp_path / "giif.pth").write_bytes(b"giif")
    argv = ["--data", str(data), "--store", str(tmp_path / "store"), "--seeds", "0", "1", "--jobs", "1"]
    argv += ["--giif_model", str(tmp_path / "giif.pth")]

    def on(cpu: str, work: str, *extra: str):
        monkeypatch.setattr(runner, "machine", lambda: {"cpu_model": cpu})
        return bench.parse_args([*argv, "--work", str(tmp_path / work), *extra])

    # The old store: GIIF w/o ftd. + Ours made on CPU A before fingerprints (written under the keys' twins).
    args = on("CPU A", "old")
    _, _, refs = bench.sr_plan(args, Path(args.work))
    jobs = bench.srhand_jobs(args, Path(args.work), ["giif_ours"], check_models=False)
    keys = [runner.job_key(args, cmd, seed, refs) for _, seed, _, cmd in jobs]
    store = runstore.RunStore(tmp_path / "store")
    for (row, seed, _, _), twin in zip(jobs, runner.legacy_keys(args, keys), strict=True):
        assert twin["version"] == 1 and "fingerprint" not in twin["data"]
        store.put(
            "srhand",
            row,
            twin,
            _fake_srhand_metrics(20.0 + seed, 1.5 + 0.1 * seed),
            "old1234",
            False,
            machine="CPU A",
        )
    legacy_files = {p: p.read_text() for p in (tmp_path / "store").rglob("*.json")}

    # On CPU A: the legacy runs are reused, SRHand is run; the table names both data, the claim does not pair.
    args = on("CPU A", "a")
    table = bench.srhand_table(args, Path(args.work), "srhand")
    assert sorted(ran) == ["srhand_s0", "srhand_s1"]
    assert table["machines"] == [("CPU A", 4)] and len(table["data"]) == 2
    assert table["rows"]["GIIF w/o ftd. + Ours"]["provenance"]["0"]["data"].startswith("legacy:CPU A:")
    assert table["rows"]["SRHand (GIIF w/ ftd. + Ours)"]["provenance"]["0"]["data"].startswith("sha256:")
    text = "\n".join(bench.srhand_markdown(table))
    assert "Runs by machine: `CPU A` (4 runs)" in text and "mixes 2 data sets: " in text
    assert "legacy data of `CPU A`" in text
    out = bench.section_claims({"cpu": {"srhand": {"result": table}}})
    ftd = next(c for c in out["claims"] if c["name"].startswith("fine-tuning") and c["metric"] == "p2p_mm")
    assert ftd["scales"]["cpu"]["verdict"] == claims.DATA_DIFFER
    entry = json.loads(
        next((tmp_path / "store" / "cpu" / "srhand" / "srhand").glob("seed0-*.json")).read_text()
    )
    assert entry["key"]["version"] == 2 and set(entry["data_parts"]) == {"meta"}

    # On CPU B: not reused (its captures may differ): GIIF w/o ftd. + Ours runs under the current key; SRHand
    # is found (same fingerprint: these fake captures are the same folder); the claim pairs.
    ran.clear()
    args = on("CPU B", "b")
    table = bench.srhand_table(args, Path(args.work), "srhand")
    assert sorted(ran) == ["giif_ours_s0", "giif_ours_s1"]
    assert table["machines"] == [("CPU A", 2), ("CPU B", 2)] and len(table["data"]) == 1
    assert "mixes 2 machines" in "\n".join(bench.srhand_markdown(table))
    out = bench.section_claims({"cpu": {"srhand": {"result": table}}})
    ftd = next(c for c in out["claims"] if c["name"].startswith("fine-tuning") and c["metric"] == "p2p_mm")
    assert ftd["scales"]["cpu"]["verdict"] == "holds"
    # The legacy entries themselves are never touched (still found, on CPU A, with --legacy_machine elsewhere).
    assert all(p.read_text() == text for p, text in legacy_files.items())


def _strip_provenance(tree):
    """A results.json as written before issue 22: no per-seed provenance, no machine or data mixes."""
    if isinstance(tree, dict):
        return {
            k: _strip_provenance(v)
            for k, v in tree.items()
            if k not in ("provenance", "machines", "data", "provenance_from")
        }
    if isinstance(tree, list):
        return [_strip_provenance(v) for v in tree]
    return tree


@pytest.mark.parametrize("stem", ["results", "results_medium"])
def test_committed_tables_state_their_machines(bench, stem):
    """Every table of the committed results names the machines and data of its runs, and every row's seed has
    its run's provenance; for results written before, it is found again from the run store (the entries whose
    metrics are the table's), exactly as committed."""
    committed = json.loads((REPO / "benchmarks" / f"{stem}.json").read_text())
    scale = "medium" if stem.endswith("medium") else "cpu"
    text = (REPO / "benchmarks" / f"{stem}.md").read_text()
    sections = text.split("\n## ")[1:]
    for section in sections:
        if section.startswith("Speed"):
            continue  # timings of this machine, named in the section's header line
        assert "Runs by machine: `" in section or "runs by machine:" in section, section[:80]
    assert len(sections) >= 4
    from utils.bench.provenance import BACKFILLED, fill_from_store

    # tables written before provenance (their runs found in the store) round-trip; later ones carry their own
    legacy = {
        name: section
        for name, section in committed.items()
        if name != "claims" and BACKFILLED in json.dumps(section)  # (nested tables: identity, static)
    }
    assert len(legacy) >= 3
    stripped = _strip_provenance(legacy)
    assert fill_from_store(stripped, REPO / "benchmarks" / "runs", scale) >= len(legacy)  # tables, nested too
    assert json.loads(json.dumps(stripped)) == legacy
    seeds = [p for section in legacy.values() for p in _values_of(section, "provenance")]
    assert seeds and all(
        p and p["machine"] == LEGACY_MACHINE and p["data"].startswith("legacy:") for p in seeds
    )
    recorded = [p for n, s in committed.items() if n not in legacy for p in _values_of(s, "provenance")]
    assert all(p and p["data"].startswith("sha256:") for p in recorded)  # later tables: content fingerprints


def _values_of(tree, name: str) -> list:
    """Every per-seed value under a key ``name`` anywhere in ``tree`` (rows: ``{seed: ...}``, SR: ``{label: {seed:
    ...}}``)."""
    out = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == name and isinstance(v, dict):
                for item in v.values():
                    out += list(item.values()) if item and "machine" not in item else [item]
            else:
                out += _values_of(v, name)
    return out


def test_tables_carry_the_p2p_standard_error_and_name_the_estimator():
    """A P2P cell of a run evaluated since issue 26 carries the estimator's standard error; a table of runs
    evaluated before says its P2P is the i.i.d. estimate."""
    from utils.bench.claims_table import summarise

    def table(se):
        runs = {
            str(s): {"p2p_mm": 2.0 + 0.01 * s, "p2p_mm_se": se, "render_psnr": 20.0, "perceptual": "x"}
            for s in range(3)
        }
        return {"rows": {"SRHand": summarise("srhand", runs)}, "seeds": [0, 1, 2]}

    new = "\n".join(report.srhand_markdown(table(0.0012)))
    assert "| 2.010 ± 0.010 (SE 0.0012) |" in new and "the stratified estimator" in new
    old = "\n".join(report.srhand_markdown(table(None)))
    assert "| 2.010 ± 0.010 |" in old and "the i.i.d. estimator of before issue 26" in old


def test_refinement_rows_metrics_table_and_claims(bench):
    metrics = {
        "perceptual_key": "lpips",
        "render": {"all": {"psnr_masked": 25.0, "lpips_masked": 0.1}},
        "p2p_mm": 1.5,
        "p2p_mm_mano": 2.0,
        "refinement": {"keypoints": {"mpjpe_annotation_mm": 3.5, "mpjpe_refined_mm": 1.5}},
        "test_time_fit": {
            "p2p_mm": 1.4,
            "p2p_mm_mano": 1.9,
            "render": {"all": {"psnr_masked": 25.5}},
            "keypoints": {"mpjpe_annotation_mm": 3.6, "mpjpe_refined_mm": 2.0},
        },
    }
    row = bench._row_metrics(metrics)
    assert (row["mpjpe_annotation_mm"], row["mpjpe_refined_mm"], row["ttf_p2p_mm"]) == (3.5, 1.5, 1.4)
    assert (row["ttf_render_psnr"], row["ttf_mpjpe_mm"], row["ttf_p2p_mm_mano"]) == (25.5, 2.0, 1.9)
    plain = bench._row_metrics({k: v for k, v in metrics.items() if k not in ("refinement", "test_time_fit")})
    assert plain["mpjpe_refined_mm"] is None and plain["ttf_p2p_mm"] is None

    def seeds(key, p2p):
        runs = {
            str(s): {"p2p_mm": v, "p2p_own_pose_mm": v - 0.1, "p2p_mm_mano": 2.0, "render_psnr": 20.0}
            for s, v in p2p
        }
        return {**bench._summarise(key, runs), "provenance": {str(s): _origin("sha256:aa") for s, _ in p2p}}

    rows = {
        "SRHand": seeds("srhand", [(0, 2.1), (1, 2.2), (2, 2.15)]),
        "SRHand, MANO refinement": seeds("srhand_refine", [(0, 1.6), (1, 1.7), (2, 1.62)]),
    }
    result = {"rows": rows, "seeds": [0, 1, 2], "noise_sets": bench.NOISE_SETS}
    text = "\n".join(bench.refine_markdown(result))
    assert "P2P, test-time fit (mm)" in text and "MPJPE refined (mm)" in text
    assert "| SRHand, MANO refinement |" in text and "**closer**" in text
    claims = bench.section_claims({"cpu": {"refine": {"result": {"rows": rows}}}})
    by = {(c["name"], c["words"]): c["scales"]["cpu"] for c in claims["claims"]}
    judged = {words: v for (name, words), v in by.items() if name == "MANO refinement vs none"}
    own = next(v for words, v in judged.items() if words.startswith("new: SRHand") and "test-time" in words)
    annotated = next(
        v
        for words, v in judged.items()
        if words.startswith("new: SRHand")
        and "renders" not in words
        and "test-time" not in words
        and "noise" not in words
    )
    assert annotated["mean"] == pytest.approx(-0.51, abs=1e-9) and annotated["verdict"] == "holds"
    assert own["mean"] == pytest.approx(-0.51, abs=1e-9)  # both rows' own-pose P2P are 0.1 below
    vs_input = next(
        v for (name, _), v in by.items() if name == "SRHand with MANO refinement vs the input MANO mesh"
    )
    # the refined rows at their own poses (P2P - 0.1) against the input MANO mesh (its P2P under every column)
    assert vs_input["mean"] == pytest.approx(1.54 - 2.0, abs=1e-9) and vs_input["verdict"] == "holds"


def test_tables_carry_the_pseudo_ground_truth_p2p_beside_the_truths(bench):
    """The paper's P2P protocol (issue 23): metrics.json's p2p_pseudo_gt_mm and its SE become a column beside the
    truth's P2P in every 3D table, ``-`` for runs that did not measure it; the input-MANO row carries its own."""
    from utils.bench.claims_table import input_mano_row, summarise

    metrics = {
        "render": {"all": {"psnr_masked": 20.0, "lpips_masked": 0.1}},
        "p2p_mm": 2.0,
        "p2p_se_mm": 0.001,
        "p2p_mm_mano": 2.1,
        "p2p_pseudo_gt_mm": 1.25,
        "p2p_pseudo_gt_se_mm": 0.002,
        "p2p_pseudo_gt_mm_mano": 1.5,
    }
    row = bench._row_metrics(metrics)
    assert (row["p2p_pseudo_gt_mm"], row["p2p_pseudo_gt_mm_se"], row["p2p_pseudo_gt_mm_mano"]) == (
        1.25,
        0.002,
        1.5,
    )
    old = bench._row_metrics({k: v for k, v in metrics.items() if "pseudo" not in k})
    assert old["p2p_pseudo_gt_mm"] is None

    rows = {
        "SRHand": summarise("srhand", {"0": row, "1": {**row, "p2p_pseudo_gt_mm": 1.35}}),
        "XHand": summarise("xhand", {"0": old, "1": old}),
    }
    rows.update(input_mano_row(rows))
    text = "\n".join(report.srhand_markdown({"rows": rows, "seeds": [0, 1]}))
    header = next(line for line in text.splitlines() if line.startswith("| row |"))
    assert "| P2P (mm) | P2P to pseudo-GT (mm) |" in header
    assert "| 2.000 ± 0.000 (SE 0.0010) | 1.300 ± 0.071 (SE 0.0020) |" in text
    assert "| 2.000 ± 0.000 (SE 0.0010) | - |" in text  # XHand: not measured
    assert "| input MANO mesh (no reconstruction) |" in text and "| 1.500 ± 0.000 |" in text
    assert "the paper's P2P protocol" in text


def test_issue_24_keys_leave_the_stored_runs_found():
    """``data.lr_camera`` counts only with a camera degradation and ``model.args.residual = none`` is what the
    stored runs computed: both leave the run key unchanged there, and change it otherwise."""
    stored = {"train": {"degradation": "nearest"}, "eval": {"degradation": "nearest"}, "model": {"args": {}}}
    new = json.loads(json.dumps(stored))
    new["data"] = {"lr_camera": {"psf_sigma": [0.3, 0.8]}}
    new["model"]["args"]["residual"] = "none"
    assert runstore.normalise_config(new) == runstore.normalise_config({**stored, "data": {}})
    camera = json.loads(json.dumps(new))
    camera["eval"]["degradation"] = "camera"
    assert runstore.normalise_config(camera)["data"]["lr_camera"] == {"psf_sigma": [0.3, 0.8]}
    residual = json.loads(json.dumps(new))
    residual["model"]["args"]["residual"] = "bilinear"
    assert runstore.normalise_config(residual)["model"]["args"]["residual"] == "bilinear"
