"""The networks of stage 3 (:class:`SRHandModels`): the avatar, GIIF and its frozen original, the
discriminator and the perceptual loss, built for a fit or rebuilt from a checkpoint.

The bundle is frozen: which networks a run holds never changes. Their parameters do: the avatar's by
the phases' optimisers, GIIF's fine-tuned ones by the fine-tuning rounds (:mod:`.finetune`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from models import registry
from models.avatar import HandAvatar
from trainers.srhand.context import RunContext
from trainers.srhand.giif_decode import finetuned_parameter_names
from trainers.srhand.refine import MANORefinement
from trainers.srhand.sequence import SequenceData, SRHandInputError
from utils.checkpoint import CheckpointError, build_model, load_checkpoint
from utils.config import ConfigError
from utils.metrics.perceptual import ResizedPerceptual

AVATAR_NAME = "hand_avatar"


@dataclass(frozen=True, slots=True)
class SRHandModels:
    """The networks of one fit, on the run's device.

    Attributes:
        avatar: the hand avatar being fitted (trainable).
        avatar_args: its constructor record, the checkpoint's ``model.args`` (``mean_shape`` as a list).
        hand_model: the MANO-format hand model the avatar was built from.
        ops: ``avatar.mesh_operators()`` (Laplacian, edges, rest edge lengths) for the regularisers.
        giif: the SR network (``sr_source`` giif or giif_finetuned, else None); with giif_finetuned its
            ``finetune_names`` parameters require gradients and move in the fine-tuning rounds.
        giif_orig: a frozen copy of ``giif`` holding the fine-tuned parameters' values before the first
            round (the wavelet loss's reference); None unless ``giif`` is.
        finetune_names: names of GIIF's fine-tuned parameters (``finetune.params``; empty unless
            giif_finetuned).
        disc: the frozen stage-2 discriminator of the fine-tuning term L_D, or None.
        perceptual: the perceptual training loss (``train.perceptual``), or None.
        mano: the fitting frames' MANO parameters refined with the avatar (``refine.enabled``), else None.
    """

    avatar: HandAvatar
    avatar_args: dict
    hand_model: object
    ops: dict
    giif: torch.nn.Module | None
    giif_orig: torch.nn.Module | None
    finetune_names: tuple
    disc: torch.nn.Module | None
    perceptual: ResizedPerceptual | None
    mano: MANORefinement | None = None

    def avatar_entry(self) -> dict:
        """The avatar's checkpoint entry ``{"name", "args", "sd"}``."""
        return {"name": AVATAR_NAME, "args": copy.deepcopy(self.avatar_args), "sd": self.avatar.state_dict()}

    def mano_entry(self) -> dict | None:
        """The refined MANO parameters' checkpoint entry ``{"frame_ids", "sd"}``, or None without refinement."""
        if self.mano is None:
            return None
        return {"frame_ids": list(self.mano.frame_ids), "sd": self.mano.state_dict()}

    def giif_initial(self) -> dict[str, torch.Tensor]:
        """The fine-tuned parameters' values before the first round (held by ``giif_orig``)."""
        if self.giif_orig is None:
            return {}
        named = dict(self.giif_orig.named_parameters())
        return {name: named[name] for name in self.finetune_names}


def hand_model_for(ctx: RunContext, side: str):
    """The hand model of ``data.mano_dir`` (or ``$SRHAND_MANO_DIR``, or the procedural hand) for ``side``."""
    from utils.geometry.mano import HandModel, resolve_hand_model_path

    path = resolve_hand_model_path(ctx.settings.data.mano_dir or None, side)
    return HandModel.from_file(path, side=side)


def avatar_arguments(ctx: RunContext, data: SequenceData) -> dict:
    """The avatar's constructor record for a fit of ``data``: ``model.*``, the view count, the mean shape."""
    return {
        **ctx.settings.model,
        "num_views": data.num_views,
        "mean_shape": [float(x) for x in data.shape.mean(0).cpu()],
    }


def build_avatar(entry: dict, hand_model) -> HandAvatar:
    """Rebuild a ``HandAvatar`` from a checkpoint entry ``{"name", "args", "sd"}`` and a hand model."""
    if entry.get("name") != AVATAR_NAME:
        raise CheckpointError(f"expected a {AVATAR_NAME!r} model entry, found {entry.get('name')!r}")
    args = dict(entry["args"])
    args["mean_shape"] = torch.tensor(args["mean_shape"], dtype=torch.float32)
    avatar = HandAvatar.from_hand_model(hand_model, **args)
    avatar.load_state_dict(entry["sd"])
    return avatar


def check_hand_model(
    avatar: HandAvatar, hand_model, mean_shape: torch.Tensor, what: str, tol_mm: float = 1.0
):
    """Raise ``SRHandInputError`` when ``hand_model`` is not the one the avatar was built from.

    Compares the rest joints the avatar stores with those of ``hand_model`` at the same mean shape.
    """
    with torch.no_grad():
        joints = hand_model.rest_joints(mean_shape.reshape(1, -1).to(hand_model.v_template))[0]
    diff = float((joints.float().cpu() - avatar.joints_rest.float().cpu()).norm(dim=-1).max()) * 1000
    if diff > tol_mm:
        raise SRHandInputError(
            f"{what}: the hand model of data.mano_dir ({getattr(hand_model, 'source_path', '?')}) is not the one "
            f"the avatar was built from (rest joints differ by up to {diff:.1f} mm): set data.mano_dir to the MANO "
            "files used for training"
        )


def load_giif(ctx: RunContext, path: str, key_name: str) -> torch.nn.Module:
    """The GIIF (or LIIF) of a stage-1/2 checkpoint, in eval mode on the run's device.

    Args:
        path: the checkpoint file. key_name: what gave the path (``giif_model``, ``--implicit_path``), for
            the error messages.
    Raises:
        ConfigError: no path. FileNotFoundError: no file. SRHandInputError: not a GIIF/LIIF checkpoint, or
            trained on normal maps of another space than ``data.normal_space``.
    """
    if not path:
        raise ConfigError(
            f"sr_source = {ctx.settings.sr_source!r} needs a GIIF checkpoint: set {key_name} "
            "(main_disc.py's giif.pth) or pass --implicit_path"
        )
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{key_name} = {path!r}: no such file (train GIIF with main_giif.py / " "main_disc.py first)"
        )
    try:
        ckpt = load_checkpoint(path, stage=("giif", "disc"))
        if ckpt["model"]["name"] not in ("giif", "liif"):
            raise CheckpointError(f"{path} holds a {ckpt['model']['name']!r} network, not GIIF/LIIF")
        giif = build_model(ckpt, registry.make)
    except CheckpointError as err:
        raise SRHandInputError(f"{key_name}: {err}") from None
    trained = (ckpt.get("config") or {}).get("data", {})
    data = ctx.settings.data
    if (
        getattr(giif, "use_normal", False)
        and trained.get("normal_space", data.normal_space) != data.normal_space
    ):
        raise SRHandInputError(
            f"{key_name} ({path}) was trained with data.normal_space = {trained['normal_space']!r}, this config "
            f"has data.normal_space = {data.normal_space!r}: set it to {trained['normal_space']!r}"
        )
    if "normal_size" in trained and trained["normal_size"] != data.normal_size:
        ctx.log.warning(
            "%s was trained with normal maps of %s pixels, data.normal_size = %d",
            key_name,
            trained["normal_size"],
            data.normal_size,
        )
    ctx.log.info(
        "GIIF loaded from %s (%s, %.2f M parameters)",
        path,
        ckpt["model"]["name"],
        sum(p.numel() for p in giif.parameters()) / 1e6,
    )
    return giif.to(ctx.device).eval()


def load_disc(ctx: RunContext) -> torch.nn.Module | None:
    """The frozen stage-2 discriminator of ``disc_model``, or None when no L_D is configured."""
    path, weight = ctx.settings.disc_model, float(ctx.settings.finetune.weights["disc"])
    if not path:
        if weight > 0:
            raise ConfigError(
                "finetune.weights.disc > 0 needs the stage-2 discriminator: set disc_model "
                "(main_disc.py's disc.pth), or set finetune.weights.disc = 0"
            )
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(f"disc_model = {path!r}: no such file")
    try:
        ckpt = load_checkpoint(path, stage="disc")
        disc = build_model(ckpt, registry.make, key="disc" if "disc" in ckpt else "model")
    except CheckpointError as err:
        raise SRHandInputError(f"disc_model: {err}") from None
    hr = ctx.settings.data.hr_size
    if hr % 8:
        raise ConfigError(f"the discriminator needs image sides divisible by 8: data.hr_size = {hr}")
    disc.requires_grad_(False)
    return disc.to(ctx.device).eval()


def perceptual_loss(ctx: RunContext) -> ResizedPerceptual | None:
    """The perceptual training loss of ``train.perceptual`` at ``train.perceptual_size``, or None."""
    t = ctx.settings.train
    if t.perceptual == "none":
        return None
    from utils.metrics.perceptual import PerceptualLoss

    loss = ResizedPerceptual(
        PerceptualLoss(t.perceptual, fast=t.perceptual_impl == "fast"), t.perceptual_size
    )
    ctx.log.info("perceptual training loss: %s", loss.name)
    return loss


def build_models(
    ctx: RunContext,
    data: SequenceData,
    hand_model,
    avatar_args: dict,
    implicit_path: str | None = None,
    resume: dict | None = None,
) -> SRHandModels:
    """The networks of a fit of ``data``: a new avatar (or the one of ``resume``), GIIF, discriminator, loss.

    Args:
        hand_model: the MANO-format hand model of the capture. avatar_args: :func:`avatar_arguments`.
        implicit_path: a GIIF checkpoint replacing ``giif_model`` (and, on a resume, the fine-tuned GIIF).
        resume: a checkpoint of this run (``state.read_resume_checkpoint``): the avatar, the refined MANO
            parameters, the fine-tuned GIIF and GIIF's values before the first round are taken from it.
    Raises:
        SRHandInputError: refinement on a single fitting frame; a resumed checkpoint with refined MANO
            parameters and ``refine.enabled = false``.
    """
    s = ctx.settings
    torch.manual_seed(ctx.seed)
    avatar = HandAvatar.from_hand_model(
        hand_model, **dict(avatar_args, mean_shape=torch.tensor(avatar_args["mean_shape"]))
    ).to(ctx.device)
    ctx.log.info(
        "avatar: %d vertices, %d faces, use_enh=%s, %.2f M parameters",
        avatar.num_verts,
        avatar.faces.shape[0],
        avatar.use_enh,
        sum(p.numel() for p in avatar.parameters()) / 1e6,
    )
    ops = avatar.mesh_operators()
    giif = giif_orig = disc = None
    names: list[str] = []
    if s.sr_source in ("giif", "giif_finetuned"):
        giif = load_giif(
            ctx, implicit_path or s.giif_model, "--implicit_path" if implicit_path else "giif_model"
        )
        giif.requires_grad_(False)
    if s.sr_source == "giif_finetuned":
        names = finetuned_parameter_names(giif, s.finetune.params)
        named = dict(giif.named_parameters())
        for name in names:
            named[name].requires_grad_(True)
        disc = load_disc(ctx)
        ctx.log.info(
            "GIIF fine-tuning: %s (%d tensors, %.3f M parameters), discriminator %s",
            s.finetune.params,
            len(names),
            sum(named[n].numel() for n in names) / 1e6,
            "on" if disc is not None else "off",
        )
    perceptual = perceptual_loss(ctx)
    mano = None
    if s.refine.enabled:
        if data.num_frames < 2:
            raise SRHandInputError(
                f"refine.enabled = true needs at least 2 fitting frames, the fit has {data.num_frames} "
                f"({data.frame_ids}; the others were left out, see the log): a single frame cannot separate the "
                "pose from the avatar's displacement; add frames or set refine.enabled = false"
            )
        mano = MANORefinement(data.pose, data.trans, data.shape, data.frame_ids, refine_shape=s.refine.shape)
        mano = mano.to(ctx.device)
        ctx.log.info(
            "MANO refinement: %d frames (pose, rotation, translation)%s, from epoch %d of the joint phase",
            data.num_frames,
            " and the capture's shape" if s.refine.shape else "",
            int(s.refine.start * s.train.epochs + 0.5) + 1,
        )
    initial = {}
    if resume is not None:
        avatar.load_state_dict(resume["model"]["sd"])
        entry = resume.get("mano_refinement")
        if entry is not None and mano is None:
            raise SRHandInputError(
                "--r: the checkpoint holds refined MANO parameters but refine.enabled = false; resume with "
                "refine.enabled = true, or start a new run"
            )
        if mano is not None and entry is not None:
            mano.load_state_dict(entry["sd"])
        elif mano is not None:
            ctx.log.warning("--r: the checkpoint has no refined MANO parameters; refinement starts now")
        if giif is not None and "giif" in resume:
            if implicit_path:
                ctx.log.warning(
                    "--implicit_path %s replaces the fine-tuned GIIF of the resumed checkpoint", implicit_path
                )
            else:
                giif.load_state_dict(resume["giif"]["sd"])
        if names and "giif_initial" in resume:
            initial = resume["giif_initial"]
    if giif is not None:
        # The frozen original (for the wavelet loss) = the current GIIF with the values of the fine-tuned
        # parameters before the first round (identical unless resumed after a round).
        giif_orig = copy.deepcopy(giif).requires_grad_(False).eval()
        with torch.no_grad():
            named = dict(giif_orig.named_parameters())
            for name, value in initial.items():
                named[name].copy_(value.to(ctx.device))
    return SRHandModels(
        avatar=avatar,
        avatar_args=avatar_args,
        hand_model=hand_model,
        ops=ops,
        giif=giif,
        giif_orig=giif_orig,
        finetune_names=tuple(names),
        disc=disc,
        perceptual=perceptual,
        mano=mano,
    )


def reference_models(ctx: RunContext, models: SRHandModels) -> SRHandModels:
    """``models`` with the plain computation of each network that has a faster one of the same function: the
    perceptual loss through the ``stlpips_pytorch`` module's own forward (``train.perceptual_impl = package``)
    and the discriminator on NCHW activations. The other networks are shared, not copied. For the step
    benchmark and the GPU check, which compare the two in values, gradients and time."""
    import dataclasses

    from utils.metrics.perceptual import PerceptualLoss

    t = ctx.settings.train
    perceptual = None
    if models.perceptual is not None:
        perceptual = ResizedPerceptual(PerceptualLoss(t.perceptual, fast=False), t.perceptual_size)
    disc = None
    if models.disc is not None:
        spec = registry.model_spec(models.disc)
        disc = registry.make(spec, args={"channels_last": False})
        disc.load_state_dict(models.disc.state_dict())
        disc = disc.requires_grad_(False).to(next(models.disc.parameters()).device).eval()
    return dataclasses.replace(models, perceptual=perceptual, disc=disc)
