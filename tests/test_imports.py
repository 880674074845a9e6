"""`import models, datasets, utils, trainers` does no work: no model files, no heavy optional packages, no GPU."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHECK = r"""
import sys, builtins
opened = []
real_open = builtins.open
def spy(file, *a, **k):
    opened.append(str(file))
    return real_open(file, *a, **k)
builtins.open = spy
import models, datasets, utils, trainers
import models.registry, utils.config, utils.geometry.camera, utils.geometry.mano, datasets.interhand
heavy = [m for m in ("smplx", "lpips", "stlpips_pytorch", "pytorch_wavelets", "nvdiffrast", "pytorch3d",
                     "torchvision", "trimesh", "cv2", "tensorboard") if m in sys.modules]
assert not heavy, f"imported at import time: {heavy}"
assert not [f for f in opened if f.endswith((".pkl", ".pth", ".npz"))], opened
import torch
assert not torch.cuda.is_initialized(), "CUDA initialised at import time"
print("ok")
"""


def test_packages_do_no_work_at_import():
    result = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
