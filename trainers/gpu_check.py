"""One-command check of every training stage on one device (``scripts/gpu_check.py``).

On one CUDA GPU at the paper's sizes (or, for a dry run, on the CPU at toy sizes with ``tiny``) it makes
its own synthetic captures in a temporary folder (``datasets.synthetic``, the procedural hand of
``assets/``; nothing is downloaded), then runs a few steps of each stage and records, per stage, the
step time, the peak memory and pass/fail:

* ``giif_train``: ``GiifTrainer.train_step`` (``conf/synthetic/paper/giif.conf``);
* ``disc_step``: ``DiscTrainer.train_step`` (GIIF + discriminator updates, ``conf/synthetic/paper/disc.conf``);
* ``srhand_joint`` / ``srhand_finetune``: ``SRHandTrainer.train_step`` / ``finetune_step`` in the joint
  phase (``conf/synthetic/paper/srhand.conf``, subdivision 3, 256 px);
* ``srhand_eval``: ``SRHandTrainer.evaluate_trained`` on one held-out frame;
* ``fastpaths_parity``: on this device (their tests run on the CPU only), the joint step's loss terms and
  parameter gradients with the networks' fast and plain computations
  (``trainers.srhand.bundle.reference_models``), and the fast functions that have no plain alternative in
  training against their reference functions (SH shading, the condition networks' first layer);
* ``nvdiffrast_parity``: when ``nvdiffrast.torch`` imports and the device is CUDA, the paper-size hand
  rendered by both backends (triangle ids, interpolated attributes, antialiased coverage).

GIIF and the discriminator get random weights of their configured size (the cost does not depend on the
values). Each stage's exception fails that stage and the check goes on; stages that would start after
``budget_s`` are skipped. Times are means over ``steps`` steps after one warm-up step, with
``torch.cuda.synchronize`` around them on CUDA; peak memory is ``torch.cuda.max_memory_allocated`` per stage
(reset before it) on CUDA and the process's peak resident set on the CPU. ``amp`` (CUDA only) times the
steps under ``torch.autocast(dtype=bfloat16)`` as well.

Returns a JSON-ready dict (:func:`run_check`) and a short markdown summary (:func:`markdown_summary`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import platform
import resource
import tempfile
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

STAGES = (
    "giif_train",
    "disc_step",
    "srhand_joint",
    "srhand_finetune",
    "srhand_eval",
    "fastpaths_parity",
    "nvdiffrast_parity",
)

# Toy sizes for the CPU dry run (as tests/test_srhand.py); paper sizes are the configs' own.
TINY_DATA = dict(
    raw_size=(64, 64),
    hr_size=32,
    num_views=2,
    num_heldout_views=1,
    num_frames=2,
    num_subjects=3,
    supersample=1,
    subdivision_levels=1,
)
PAPER_DATA = dict(num_views=4, num_heldout_views=1, num_frames=2, num_subjects=3, supersample=1)
FAST_DATA = dict(annotation="exact", p2p_frames=0)  # set when the generator knows them: no MANO fitting

TINY_SR_SETS = [
    "data.hr_size=32",
    "data.normal_size=32",
    "data.max_val_images=2",
    "train.batch_size=2",
    "train.patch_size=0",
    "train.perceptual_weight=0.0",
    "train.perceptual=none",
    "eval.perceptual=none",
]
PAPER_SR_SETS = ["data.max_val_images=2", "train.batch_size=4"]
TINY_SRHAND_SETS = [
    "data.hr_size=32",
    "data.lr_size=8",
    "data.normal_size=32",
    "model.subdivision_levels=1",
    "train.perceptual=none",
    "train.batch_size=2",
    "finetune.batch_size=2",
    "eval.perceptual=none",
    "eval.p2p_samples=300",
    "eval.batch_size=3",
]


@dataclasses.dataclass
class CheckSettings:
    """What :func:`run_check` runs. ``device``: ``cuda`` (paper sizes) or ``cpu`` with ``tiny``."""

    device: str = "cuda"
    tiny: bool = False
    steps: int = 3
    amp: bool = False
    budget_s: float = 420.0
    stages: tuple = STAGES
    work_dir: str | None = None


def sync_device(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU. Call before reading a wall clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory in MiB: ``max_memory_allocated`` on CUDA, the process's peak resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def time_steps(fn, device: torch.device, steps: int, amp: bool = False) -> dict:
    """Mean seconds of ``steps`` calls of ``fn`` after one warm-up call (``amp``: under bf16 autocast)."""
    with _autocast(device, amp):
        fn()
        sync_device(device)
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync_device(device)
    return {"step_s": (time.perf_counter() - start) / max(1, steps), "steps": steps}


def make_data(root: Path, tiny: bool) -> Path:
    """Synthetic captures (train/val/test subjects) in ``root``: toy or paper-size crops."""
    from datasets.synthetic import SyntheticConfig, generate

    known = {f.name for f in dataclasses.fields(SyntheticConfig)}
    fast = {k: v for k, v in FAST_DATA.items() if k in known}
    if tiny:
        config = SyntheticConfig(seed=0, **TINY_DATA, **fast)
    else:
        config = SyntheticConfig.preset("paper", seed=0, **PAPER_DATA, **fast)
    generate(config, root, progress=False, overwrite=True, log=lambda *args, **kwargs: None)
    return root


def _conf_path(stage: str, tiny: bool) -> Path:
    return REPO / "conf" / "synthetic" / ("" if tiny else "paper") / f"{stage}.conf"


def _logger(run_dir: Path):
    from utils.run_logging import RunLogger

    return RunLogger(run_dir, use_tensorboard=False)


def _giif_checkpoints(work: Path, tiny: bool) -> tuple[Path, Path]:
    """Random GIIF and discriminator checkpoints of the configured sizes (``giif.pth``, ``disc.pth``)."""
    from models import registry
    from models.giif import giif_spec
    from utils.checkpoint import make_checkpoint, model_entry, save_atomic

    torch.manual_seed(0)
    normal_size = 32 if tiny else 256
    config = {"data": {"normal_space": "camera", "normal_size": normal_size}}
    giif = registry.make(giif_spec("cpu" if tiny else "paper"))
    disc = registry.make({"name": "unet_disc_sn", "args": {"num_feat": 8} if tiny else {}})
    save_atomic(make_checkpoint("giif", model_entry(giif), config=config), work / "giif.pth")
    save_atomic(make_checkpoint("disc", model_entry(disc), config=config), work / "disc.pth")
    return work / "giif.pth", work / "disc.pth"


class _Stages:
    """The stage functions; each returns a dict of measurements (raising fails the stage)."""

    def __init__(self, settings: CheckSettings, device: torch.device, data: Path, work: Path):
        self.s, self.device, self.data, self.work = settings, device, data, work
        self._srhand = None

    def _timed(self, fn) -> dict:
        out = time_steps(fn, self.device, self.s.steps)
        if self.s.amp and self.device.type == "cuda":
            out["amp_bf16_step_s"] = time_steps(fn, self.device, self.s.steps, amp=True)["step_s"]
        return out

    def _sr_trainer(self, stage: str):
        from trainers.disc_trainer import DiscTrainer
        from trainers.giif_trainer import GiifTrainer
        from utils.config import load_config

        sets = [
            f"data.data_path={self.data}",
            "use_tensorboard=false",
            "train.num_workers=0",
            *(TINY_SR_SETS if self.s.tiny else PAPER_SR_SETS),
        ]
        conf = load_config(_conf_path(stage, self.s.tiny), sets, schema=stage)
        run_dir = self.work / stage
        cls = DiscTrainer if stage == "disc" else GiifTrainer
        trainer = cls(conf, run_dir, self.device, _logger(run_dir), seed=conf.get_int("seed"))
        trainer.build_data(train=True)
        trainer.build_model()
        if stage == "disc":
            trainer.build_disc()
        trainer.build_optim()
        loader, _ = trainer._train_loader()
        batch = next(iter(loader))
        return trainer, batch

    def giif_train(self) -> dict:
        trainer, batch = self._sr_trainer("giif")
        return self._timed(lambda: trainer.train_step(batch))

    def disc_step(self) -> dict:
        trainer, batch = self._sr_trainer("disc")
        return self._timed(lambda: trainer.train_step(batch))

    def srhand(self):
        """The SRHand trainer in its joint phase (built once for the three SRHand stages)."""
        if self._srhand is None:
            from trainers.srhand import SRHandTrainer
            from utils.config import load_config

            giif, disc = _giif_checkpoints(self.work, self.s.tiny)
            sets = [
                f"data.data_path={self.data}",
                "data.num_views=2" if self.s.tiny else "data.num_views=4",
                "data.num_frames=2",
                f"giif_model={giif}",
                f"disc_model={disc}",
                "sr_source=giif_finetuned",
                "use_tensorboard=false",
                "eval.num_frames=1",
                "eval.include_heldout_cameras=true",
                *(TINY_SRHAND_SETS if self.s.tiny else []),
            ]
            conf = load_config(_conf_path("srhand", self.s.tiny), sets, schema="srhand")
            run_dir = self.work / "srhand"
            trainer = SRHandTrainer(conf, run_dir, self.device, _logger(run_dir))
            trainer.build_data()
            trainer.build_models()
            trainer.enter_joint_phase()
            self._srhand = trainer
        return self._srhand

    def _joint_views_and_weights(self, trainer):
        from trainers.srhand.phases import loss_weights

        s = trainer.ctx.settings
        views = list(range(min(s.train.batch_size, trainer.fit.tensors.num_views)))
        return views, loss_weights(s.train, trainer.models.avatar.use_enh, s.train.epochs, s.train.epochs)

    def srhand_joint(self) -> dict:
        trainer = self.srhand()
        views, weights = self._joint_views_and_weights(trainer)
        out = self._timed(lambda: trainer.train_step(0, views, weights))
        return {
            **out,
            "views": len(views),
            "vertices": trainer.models.avatar.num_verts,
            "resolution": list(trainer.fit.tensors.size),
        }

    def srhand_finetune(self) -> dict:
        trainer = self.srhand()
        f = trainer.ctx.settings.finetune
        weights = dict(f.weights)
        views = list(range(min(f.batch_size, trainer.fit.tensors.num_views)))
        out = self._timed(lambda: trainer.finetune_step(0, views, weights))
        return {**out, "views": len(views)}

    def srhand_eval(self) -> dict:
        trainer = self.srhand()
        sync_device(self.device)
        start = time.perf_counter()
        report = trainer.evaluate_trained(write=False)
        sync_device(self.device)
        seconds = time.perf_counter() - start
        trainer.models.avatar.train()
        return {"step_s": seconds, "steps": 1, "frames": len(report.get("eval_frames", [])) or 1}

    def fastpaths_parity(self) -> dict:
        trainer = self.srhand()
        views, weights = self._joint_views_and_weights(trainer)
        out = fast_path_parity(trainer, views, weights)
        # CUDA convolutions may run in TF32, where another summation order moves values by ~1e-3.
        ok = (
            out["loss_max_rel_diff"] <= 1e-3
            and out["grad_rel_norm_diff"] <= 1e-2
            and max(out["retired_max_rel_diff"].values()) <= 1e-3
        )
        return {"status": "pass" if ok else "fail", **out}

    def nvdiffrast_parity(self) -> dict:
        if self.device.type != "cuda":
            return {"status": "skipped", "reason": "needs CUDA"}
        try:
            import nvdiffrast.torch  # noqa: F401
        except ImportError as err:
            return {"status": "skipped", "reason": f"nvdiffrast does not import ({err})"}
        return render_parity(self.srhand(), self.device)


def fast_path_parity(trainer, views: list[int], weights: dict) -> dict:
    """The SRHand joint step's loss terms and parameter gradients with the networks' fast and plain
    computations (``trainers.srhand.bundle.reference_models``), and each fast function without a plain
    alternative in training against its reference function, on the trainer's device.

    No optimiser step is taken. Returns the largest relative difference of a loss term
    (``loss_max_rel_diff``; a term under a millionth of the total is compared with that instead), of a
    gradient element relative to the largest gradient element (``grad_max_rel_diff``) and of the whole
    gradient vector (``grad_rel_norm_diff``, which a ReLU or max-pool kink flipped by rounding moves far
    less than the elementwise one); ``retired_max_rel_diff``: for ``sh_shade`` and the condition networks'
    ``code``, the largest difference of output and input gradient from the reference function, relative to
    the largest reference value.
    """
    from trainers.srhand.bundle import reference_models
    from trainers.srhand.phases import train_losses

    ctx, models, state = trainer.ctx, trainer.models, trainer.state
    data, targets = trainer.fit.tensors, trainer.targets
    params = [p for p in models.avatar.parameters() if p.requires_grad]

    def losses_and_grads(bundle):
        terms = train_losses(ctx, bundle, data, targets, state.prephase_result, 0, views, weights)
        grads = torch.autograd.grad(terms["total"], params, allow_unused=True)
        flat = torch.cat(
            [
                (torch.zeros_like(p) if g is None else g).reshape(-1)
                for p, g in zip(params, grads, strict=True)
            ]
        )
        return {k: float(v.detach()) for k, v in terms.items()}, flat

    ref_terms, ref_grad = losses_and_grads(reference_models(ctx, models))
    terms, grad = losses_and_grads(models)
    scale = ref_grad.abs().max().clamp(min=1e-30)
    floor = 1e-6 * abs(ref_terms["total"]) + 1e-30  # terms below a millionth of the total are rounding noise
    return {
        "loss_max_rel_diff": max(
            abs(terms[k] - ref_terms[k]) / max(abs(ref_terms[k]), floor) for k in ref_terms
        ),
        "grad_max_rel_diff": float((grad - ref_grad).abs().max() / scale),
        "grad_rel_norm_diff": float((grad - ref_grad).norm() / ref_grad.norm().clamp(min=1e-30)),
        "retired_max_rel_diff": retired_path_parity(models.avatar, data),
    }


def retired_path_parity(avatar, data) -> dict:
    """``sh_shade`` vs ``sh_shade_reference`` and ``ConditionNetwork.code`` vs ``code_reference`` on the
    avatar's device and sizes (one frame's pose, 4 views of 128 x 128 normals): the largest difference of the
    output and of the input gradient, relative to the largest reference value of each."""
    from models.avatar import ConditionNetwork
    from utils.geometry.sh import sh_shade, sh_shade_reference

    device = avatar.verts_template.device
    gen = torch.Generator(device="cpu").manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(4, 128, 128, 3, generator=gen), dim=-1).to(device)
    coeffs = torch.randn(4, 27, generator=gen).to(device)

    def compare(fn, ref_fn, x, *args) -> float:
        outs = []
        for f in (fn, ref_fn):
            xg = x.detach().clone().requires_grad_(True)
            out = f(xg, *args)
            (grad,) = torch.autograd.grad(out.sin().sum(), xg)
            outs.append((out.detach(), grad))
        (a, ga), (b, gb) = outs
        return max(
            float((a - b).abs().max() / b.abs().max().clamp(min=1e-30)),
            float((ga - gb).abs().max() / gb.abs().max().clamp(min=1e-30)),
        )

    # A copy of the avatar's first condition network with every parameter moved off its initial value (the
    # zero-initialised last layer would make both outputs exactly 0).
    net = copy.deepcopy(
        next(m for m in avatar.modules() if isinstance(m, ConditionNetwork) and not m.d_extra)
    )
    with torch.no_grad():
        for param in net.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=gen).to(device))
    return {
        "sh_shade": compare(sh_shade, sh_shade_reference, normals, coeffs),
        "condition_code": compare(net.code, net.code_reference, avatar.condition(data.pose[0])),
    }


def render_parity(trainer, device: torch.device) -> dict:
    """The trainer's posed avatar in its fitted views, nvdiffrast vs the torch backend.

    Pass: >= 99 % of the pixels with the same triangle, interpolated positions within 1e-4 m there,
    antialiased coverage (same raster; torch limited to nvdiffrast's rule) within 1e-3 on >= 99 % of them.
    """
    from utils.render import get_renderer

    d, avatar = trainer.fit.tensors, trainer.models.avatar
    views = list(range(min(4, d.num_views)))
    with torch.no_grad():
        geo = avatar.forward_geometry(d.pose[0], d.trans[0])
        clip = d.cameras(0, views).to_clip(geo["verts_posed"][None].expand(len(views), -1, -1)).contiguous()
    faces = avatar.faces
    nv, th = get_renderer("nvdiffrast"), get_renderer("torch")
    r_nv, r_th = nv.rasterize(clip, faces, d.size), th.rasterize(clip, faces, d.size)
    same = r_nv[..., 3] == r_th[..., 3]
    covered = (r_th[..., 3] > 0) | (r_nv[..., 3] > 0)
    attr = geo["verts_posed"].detach().contiguous()
    i_nv, i_th = nv.interpolate(attr, r_nv, faces), th.interpolate(attr, r_th, faces)
    both = same & covered
    interp_err = float((i_nv[both] - i_th[both]).abs().max()) if both.any() else 0.0
    mask = (r_th[..., 3:] > 0).float()
    a_nv = nv.antialias(mask, r_th, clip, faces)
    a_th = get_renderer("torch", aa_max_hops=0).antialias(mask, r_th, clip, faces)
    aa_off = float(((a_nv - a_th).abs() > 1e-3).float().mean())
    same_frac = float(same.float().mean())
    same_covered = float(same[covered].float().mean()) if covered.any() else 1.0
    ok = same_frac >= 0.99 and interp_err <= 1e-4 and aa_off <= 0.01
    return {
        "status": "pass" if ok else "fail",
        "same_triangle": same_frac,
        "same_triangle_covered": same_covered,
        "interp_max_abs_m": interp_err,
        "antialias_off_fraction": aa_off,
    }


def run_check(settings: CheckSettings, log=print) -> dict:
    """Run the selected stages; returns ``{"env": ..., "stages": {name: {"status", "step_s", "peak_mib", ...}}}``."""
    device = torch.device(settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "--device cuda but torch.cuda.is_available() is False (use --device cpu --tiny for a dry run)"
        )
    start = time.perf_counter()
    result = {"env": environment(device, settings), "stages": {}}
    with tempfile.TemporaryDirectory(dir=settings.work_dir) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        log(
            f"[gpu_check] generating {'tiny' if settings.tiny else 'paper-size'} synthetic captures in {work}"
        )
        data = make_data(work / "data", settings.tiny)
        result["data_s"] = time.perf_counter() - t0
        stages = _Stages(settings, device, data, work)
        for name in settings.stages:
            elapsed = time.perf_counter() - start
            if elapsed > settings.budget_s:
                result["stages"][name] = {
                    "status": "skipped",
                    "reason": f"time budget {settings.budget_s:.0f} s spent",
                }
                log(f"[gpu_check] {name}: skipped (budget)")
                continue
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            try:
                entry = getattr(stages, name)()
                entry.setdefault("status", "pass")
            except Exception as err:  # a failing stage is a result; the others still run
                entry = {
                    "status": "fail",
                    "error": f"{type(err).__name__}: {err}",
                    "traceback": traceback.format_exc(limit=8),
                }
            if entry["status"] != "skipped":
                entry["peak_mib"] = peak_memory_mib(device)
            entry["wall_s"] = time.perf_counter() - t0
            result["stages"][name] = entry
            step = f"{entry['step_s'] * 1000:.1f} ms/step" if "step_s" in entry else entry.get("error", "")
            log(f"[gpu_check] {name}: {entry['status']} {step} ({entry['wall_s']:.1f} s)")
    result["total_s"] = time.perf_counter() - start
    result["passed"] = all(e["status"] in ("pass", "skipped") for e in result["stages"].values())
    return result


def environment(device: torch.device, settings: CheckSettings) -> dict:
    import subprocess

    try:
        rev = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        rev = None
    return {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "git_revision": rev,
        "size": "tiny" if settings.tiny else "paper",
        "steps": settings.steps,
        "amp": settings.amp,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def markdown_summary(result: dict) -> str:
    """A short markdown table of ``result`` (for ``benchmarks/gpu.md``)."""
    env = result["env"]
    lines = [
        f"`scripts/gpu_check.py` at `{env['git_revision']}` on {env['date']}: {env['gpu'] or env['device']}, "
        f"torch {env['torch']} (CUDA {env['cuda']}), {env['size']} size, {env['steps']} timed steps per stage, "
        f"{result['total_s']:.0f} s in all ({result.get('data_s', 0):.0f} s making the captures).",
        "",
        "| stage | status | step (ms) | bf16 autocast step (ms) | peak memory (MiB) | note |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in result["stages"].items():
        step = f"{e['step_s'] * 1000:.1f}" if "step_s" in e else ""
        amp = f"{e['amp_bf16_step_s'] * 1000:.1f}" if "amp_bf16_step_s" in e else ""
        peak = f"{e['peak_mib']:.0f}" if "peak_mib" in e else ""
        note = e.get("error") or e.get("reason") or ""
        if name == "fastpaths_parity" and "loss_max_rel_diff" in e:
            retired = ", ".join(f"{k} {v:.1e}" for k, v in e.get("retired_max_rel_diff", {}).items())
            note = (
                f"losses {e['loss_max_rel_diff']:.1e}, gradients {e['grad_rel_norm_diff']:.1e} "
                f"(relative, fast vs reference); {retired}"
            )
        if name == "nvdiffrast_parity" and "same_triangle" in e:
            note = (
                f"same triangle {e['same_triangle']:.4f}, interp max {e['interp_max_abs_m']:.1e} m, "
                f"AA off {e['antialias_off_fraction']:.4f}"
            )
        lines.append(
            f"| {name} | {e['status']} | {step} | {amp} | {peak} | {note.splitlines()[0] if note else ''} |"
        )
    return "\n".join(lines) + "\n"
