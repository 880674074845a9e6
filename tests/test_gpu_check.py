"""scripts/gpu_check.py: the CPU dry run (``--device cpu --tiny``) runs every stage and writes its JSON and
markdown; a failing stage is recorded and the others still run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_cpu_tiny_dry_run(tmp_path):
    import gpu_check

    out = tmp_path / "check"
    status = gpu_check.main(["--device", "cpu", "--tiny", "--steps", "1", "--out", str(out)])
    result = json.loads(out.with_suffix(".json").read_text())
    stages = result["stages"]
    assert list(stages) == [
        "giif_train",
        "disc_step",
        "srhand_joint",
        "srhand_finetune",
        "srhand_eval",
        "fastpaths_parity",
        "nvdiffrast_parity",
    ]
    for name in ("giif_train", "disc_step", "srhand_joint", "srhand_finetune", "srhand_eval"):
        assert stages[name]["status"] == "pass", (name, stages[name].get("traceback"))
        assert stages[name]["step_s"] > 0 and stages[name]["peak_mib"] > 0
    parity = stages["fastpaths_parity"]
    assert parity["status"] == "pass", parity.get("traceback")
    # the tiny config's displacement terms are ~1e-7 of the total: rounding shows at 1e-4 relative there
    assert 0 <= parity["loss_max_rel_diff"] < 1e-3 and 0 <= parity["grad_rel_norm_diff"] < 1e-5
    assert set(parity["retired_max_rel_diff"]) == {"sh_shade", "condition_code"}
    assert all(0 <= v < 1e-5 for v in parity["retired_max_rel_diff"].values())
    assert stages["nvdiffrast_parity"]["status"] == "skipped"  # needs CUDA
    assert status == 0 and result["passed"]
    assert result["env"]["size"] == "tiny" and result["env"]["device"] == "cpu"
    md = out.with_suffix(".md").read_text()
    assert "| srhand_finetune | pass |" in md


def test_failing_stage_is_recorded(monkeypatch, tmp_path):
    from trainers import gpu_check

    def broken(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(gpu_check._Stages, "giif_train", broken)
    monkeypatch.setattr(gpu_check, "make_data", lambda root, tiny: root)  # no data needed for these stages
    settings = gpu_check.CheckSettings(
        device="cpu", tiny=True, steps=1, stages=("giif_train", "nvdiffrast_parity"), work_dir=str(tmp_path)
    )
    result = gpu_check.run_check(settings, log=lambda *a: None)
    assert result["stages"]["giif_train"]["status"] == "fail"
    assert "boom" in result["stages"]["giif_train"]["error"]
    assert result["stages"]["nvdiffrast_parity"]["status"] == "skipped"
    assert not result["passed"]
    assert "| giif_train | fail |" in gpu_check.markdown_summary(result)
