"""Check every training stage on one CUDA GPU at the paper's sizes in a few minutes (``trainers.gpu_check``).

Makes its own synthetic captures in a temporary folder (no downloads), runs a few steps of the GIIF
training step, the discriminator step, the SRHand joint and fine-tuning steps, evaluates one frame, and
compares nvdiffrast with the torch renderer when nvdiffrast imports. Writes step times, peak memory and
pass/fail per stage as JSON (and a markdown summary for ``benchmarks/gpu.md``). Needs only
``pip install -r requirements.txt``.

    python scripts/gpu_check.py                                   # CUDA, paper sizes -> gpu_check.json/.md
    python scripts/gpu_check.py --amp --out results/gpu_check     # + bf16 autocast step times
    python scripts/gpu_check.py --device cpu --tiny               # dry run on the CPU at toy sizes

Exit status 0 when every stage passed (or was skipped), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers.gpu_check import STAGES, CheckSettings, markdown_summary, run_check  # noqa: E402
from utils.checkpoint import atomic_write_text  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--tiny", action="store_true", help="toy sizes (the CPU dry run)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per stage after one warm-up step")
    p.add_argument("--amp", action="store_true", help="also time the steps under bf16 autocast (CUDA only)")
    p.add_argument(
        "--budget", type=float, default=420.0, help="seconds after which remaining stages are skipped"
    )
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    p.add_argument("--out", default="gpu_check", help="output path without suffix: OUT.json and OUT.md")
    args = p.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    settings = CheckSettings(
        device=args.device,
        tiny=args.tiny,
        steps=args.steps,
        amp=args.amp,
        budget_s=args.budget,
        stages=tuple(args.stages),
    )
    result = run_check(settings)
    out = Path(args.out)
    atomic_write_text(out.with_suffix(".json"), json.dumps(result, indent=2))
    summary = markdown_summary(result)
    atomic_write_text(out.with_suffix(".md"), summary)
    print(summary)
    print(
        f"[gpu_check] {'PASS' if result['passed'] else 'FAIL'}: {out.with_suffix('.json')}, {out.with_suffix('.md')}"
    )
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
