"""Stage 1: train GIIF (or the LIIF baseline) on the training subjects of a capture set.

Per step: a batch of MANO-masked HR crops with their MANO normal maps; one HR/LR factor ``s`` drawn
uniformly in ``[scale_min, scale_max]`` for the whole batch (arbitrary scale; the reference trains x16
only); ``LR = degrade(HR, scale=s)``; GIIF decodes the HR pixel grid (or a random HR patch) and is
trained with ``l1_weight * L1 + perceptual_weight * perceptual`` (a real 3-channel perceptual loss in
[-1, 1], not the reference's channel-summed one). Adam with the reference's per-step exponential
decay. Evaluation is ``trainers.sr_eval.evaluate_sr`` on the validation subjects.

The discriminator stage (``trainers.disc_trainer``) subclasses this trainer and adds the adversarial
terms, so data, schedule, logging, checkpoints and evaluation are shared.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from datasets.giif_data import GiifDataset
from datasets.lr_camera import LRCamera, identity_seed, seeded_generators
from datasets.preprocess import degrade
from models import registry
from models.sr_coords import make_coord
from trainers.sr_eval import evaluate_sr, format_sr_table
from utils import dist
from utils.checkpoint import (
    CheckpointError,
    atomic_write_text,
    build_model,
    check_arch_matches,
    checkpoint_dir,
    latest_checkpoint,
    load_checkpoint,
    make_checkpoint,
    model_entry,
    save_atomic,
)
from utils.config import ConfigError, conf_to_dict, describe_origin, missing_data_path_error, read_section
from utils.errors import InputError
from utils.image_io import make_grid, write_image
from utils.metrics.image import PerceptualMetric
from utils.metrics.perceptual import PerceptualLoss
from utils.run_logging import RunLogger, check_finite

GIIF_STAGES = ("giif", "disc")  # checkpoints whose "model" entry is a GIIF/LIIF network


class CachedDataset(Dataset):
    """Memoises ``dataset[i]`` (crop, mask and normal-map rendering happen once per sample).

    Used with ``num_workers = 0``; with worker processes each worker would keep its own copy.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        if index not in self.cache:
            self.cache[index] = self.dataset[index]
        return self.cache[index]


def collate(samples: list[dict]) -> dict:
    """Stack the tensor entries of GIIF samples and keep the rest as lists."""
    out = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out


def model_spec_from_conf(conf, key: str = "model") -> dict:
    """``{"name", "args"}`` of ``conf.<key>``, with the args checked against the constructor.

    Raises:
        ConfigError: unknown model name, or an argument the constructor does not take (named with its
            full key path).
    """
    spec = conf_to_dict(conf, key)
    name = spec["name"]
    try:
        cls = registry.lookup(name)
    except KeyError as err:
        raise ConfigError(f"{key}.name = {name!r}: {err}") from None
    params = inspect.signature(cls.__init__).parameters
    unknown = [a for a in spec.get("args", {}) if a not in params]
    if unknown:
        valid = [p for p in params if p != "self"]
        raise ConfigError(
            f"{', '.join(f'{key}.args.{a}' for a in unknown)}: not an argument of {name} ({cls.__name__}); "
            f"valid: {valid}"
        )
    return {"name": name, "args": spec.get("args", {})}


def make_from_conf(spec: dict, key: str = "model"):
    """The network of ``conf.<key>``, built from its :func:`model_spec_from_conf` spec.

    Raises:
        ConfigError: the constructor rejects an argument value (its ``ValueError``, prefixed with
            ``<key>.args``): the value came from the config, so it is the user's to fix.
    """
    try:
        return registry.make(spec)
    except ValueError as err:
        raise ConfigError(f"{key}.args: {err}") from err


def check_giif_arch(ckpt_entry: dict, model: torch.nn.Module, what: str) -> None:
    """``check_arch_matches`` of a checkpoint's GIIF/LIIF entry against ``model`` (built from the config),
    reading arguments the checkpoint does not record (e.g. ``residual`` before it existed) as their defaults.

    Raises:
        CheckpointError: the architectures differ, one line per argument.
    """
    try:
        defaults = registry.default_args(ckpt_entry["name"])
    except KeyError:
        defaults = None  # an unknown name: check_arch_matches reports the name difference
    check_arch_matches(ckpt_entry, registry.model_spec(model), what=what, defaults=defaults)


def lr_lambda(decay: float, floor: float):
    """The reference schedule: factor ``max(floor, 10^(-decay * step))`` (x0.1 every 1/decay steps)."""
    return lambda step: max(floor, 10.0 ** (-decay * step))


class GiifTrainer:
    """Trains and evaluates GIIF. See the module docstring.

    Args:
        conf: validated config (schema ``conf/schema/giif.conf``).
        run_dir: the run folder (checkpoints, logs, metrics.json, visualisations).
        device: torch device of this process.
        logger: the run's ``RunLogger``.
        seed: the run's seed (``trainers.run`` passes ``--seed`` or the config's): data order, scale draws
            and patch positions follow it. None takes the config's ``seed``.
    """

    stage = "giif"

    def __init__(self, conf, run_dir: str | Path, device: torch.device, logger: RunLogger, seed: int):
        self.conf = conf
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.log = logger
        self.seed = int(seed)
        self.step = 0
        self.epoch = 0
        self.model: torch.nn.Module | None = None
        self.optimizer = None
        self.scheduler = None

    # ------------------------------------------------------------------ data
    def _dataset(self, split_key: str, captures: list, limit: int = -1) -> Dataset:
        data = self.conf.get_config("data")
        split = data.get_string(split_key)
        mano_dir = data.get_string("mano_dir") or None
        sequences = data.get_int("sequences")
        dataset = GiifDataset(
            data.get_string("data_path"),
            split=split,
            captures=captures or None,
            sequences=None if sequences < 0 else sequences,
            cameras=data.get_list("cameras") or None,
            drop_cameras=tuple(data.get_list("drop_cam")),
            hand=data.get_string("hand"),
            size=data.get_int("hr_size"),
            normal_size=data.get_int("normal_size"),
            normal_space=data.get_string("normal_space"),
            crop_ratio=data.get_float("crop_ratio"),
            frame_stride=data.get_int("frame_stride"),
            mano_dir=mano_dir,
        )
        if 0 < limit < len(dataset):
            # Evenly spread subset, deterministic, so validation covers every subject and camera.
            stride = len(dataset) / limit
            dataset = torch.utils.data.Subset(dataset, [int(i * stride) for i in range(limit)])
        return CachedDataset(dataset) if data.get_bool("cache") else dataset

    def _check_hand_model(self) -> None:
        """Log the hand model the MANO normal maps come from; refuse the procedural stand-in on captures that
        are not synthetic unless ``data.allow_procedural_hand``."""
        from datasets.capture import check_hand_model_for_data
        from utils.geometry.mano import is_procedural_hand, resolve_hand_model_path

        data = self.conf.get_config("data")
        path = resolve_hand_model_path(data.get_string("mano_dir") or None, data.get_string("hand"))
        kind = "procedural stand-in hand (NOT MANO)" if is_procedural_hand(path) else "MANO-format hand"
        self.log.info("hand model: %s %s", kind, path)
        check_hand_model_for_data(path, data.get_string("data_path"), data.get_bool("allow_procedural_hand"))

    def _captures(self) -> tuple[list, list]:
        from datasets import interhand

        data = self.conf.get_config("data")
        root = data.get_string("data_path")
        if not Path(root).is_dir():  # trainers.run.check_inputs checks it first; this is for direct use
            raise missing_data_path_error(self.conf)
        try:
            val = [str(c) for c in data.get_list("val_captures")] or interhand.list_captures(
                root, data.get_string("val_split")
            )
            train = [str(c) for c in data.get_list("train_captures")]
            if not train:
                train = interhand.list_captures(root, data.get_string("train_split"))
                if data.get_string("train_split") == data.get_string("val_split"):
                    train = [c for c in train if c not in set(val)]
        except (
            FileNotFoundError
        ) as err:  # a folder, but not the InterHand2.6M layout: say where the path came from
            raise InputError(
                f"data.data_path = {root!r} (from {describe_origin(self.conf, 'data.data_path')}) is not an "
                f"InterHand2.6M-layout folder (images/<split>/Capture<N>/..., annotations/<split>/): {err}"
            ) from None
        if data.get_string("train_split") == data.get_string("val_split"):
            overlap = sorted(set(map(str, train)) & set(map(str, val)))
            if overlap:
                raise ConfigError(
                    f"data.train_captures and data.val_captures share {overlap}: validation subjects must "
                    "not be trained on (the reference code's [:-2] / [-4:] overlap is a bug we do not repeat)"
                )
        return train, val

    def build_data(self, train: bool = True) -> None:
        train_caps, val_caps = self._captures()
        self._check_hand_model()
        if train:
            self.train_set = self._dataset("train_split", train_caps)
            self.log.info("training set: %d samples (captures %s)", len(self.train_set), train_caps)
        self.val_set = self._dataset("val_split", val_caps, self.conf.get_int("data.max_val_images"))
        self.log.info("validation set: %d samples (captures %s)", len(self.val_set), val_caps)

    def _train_loader(self) -> tuple[DataLoader, object]:
        tconf = self.conf.get_config("train")
        sampler = dist.distributed_sampler(self.train_set, shuffle=True, seed=self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        self._loader_generator = (
            generator  # reseeded every epoch (see train), so a resumed run sees the same order
        )
        loader = DataLoader(
            self.train_set,
            batch_size=tconf.get_int("batch_size"),
            shuffle=sampler is None,
            sampler=sampler,
            generator=generator,
            num_workers=tconf.get_int("num_workers"),
            collate_fn=collate,
            drop_last=len(self.train_set) >= tconf.get_int("batch_size") * max(1, dist.world_size()),
        )
        return loader, sampler

    def val_batches(self):
        return DataLoader(
            self.val_set, batch_size=self.conf.get_int("eval.batch_size"), shuffle=False, collate_fn=collate
        )

    # ------------------------------------------------------------------ model
    def build_model(self, model_path: str | None = None) -> None:
        """Build GIIF from the config, or from ``model_path``'s own spec (which must match the config)."""
        spec = model_spec_from_conf(self.conf)
        if model_path:
            ckpt = load_checkpoint(model_path, stage=GIIF_STAGES)
            model = make_from_conf(spec)
            check_giif_arch(ckpt["model"], model, what=f"GIIF ({model_path})")
            model = build_model(ckpt, registry.make)
            self.log.info(
                "GIIF initialised from %s (stage %s, step %d)",
                model_path,
                ckpt.get("stage"),
                ckpt.get("step", 0),
            )
        else:
            model = make_from_conf(spec)
        self.model = model.to(self.device)
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log.info("model %s: %.2f M parameters", spec["name"], n_params / 1e6)

    def giif_lr_decay(self) -> float:
        """Per-step exponential decay of GIIF's learning rate (stage 2 uses its own key)."""
        return self.conf.get_float("train.lr_decay")

    def build_optim(self) -> None:
        tconf = self.conf.get_config("train")
        self.ddp_model = dist.wrap_ddp(self.model, self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=tconf.get_float("learning_rate"))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(self.giif_lr_decay(), tconf.get_float("lr_floor"))
        )
        impl = tconf.get_string("perceptual_impl")
        if impl not in ("fast", "package"):
            raise ConfigError(f"train.perceptual_impl must be fast or package, got {impl!r}")
        self.perceptual_loss = (
            PerceptualLoss(tconf.get_string("perceptual"), fast=impl == "fast")
            if tconf.get_float("perceptual_weight") > 0
            else None
        )
        if self.perceptual_loss is not None:
            self.log.info("perceptual training loss: %s", self.perceptual_loss.name)

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        return make_checkpoint(
            self.stage,
            model_entry(dist.unwrap(self.model)),
            optimizer=self.optimizer.state_dict(),
            step=self.step,
            epoch=self.epoch,
            config=conf_to_dict(self.conf),
            scheduler=self.scheduler.state_dict(),
            rng=torch.get_rng_state(),
        )

    def save(self) -> None:
        """Atomically write ``checkpoints/last.pth`` (resumable) and ``giif.pth`` (the model alone)."""
        if not dist.is_main():
            return
        save_atomic(self._state(), checkpoint_dir(self.run_dir) / "last.pth")
        save_atomic(
            make_checkpoint(
                "giif",
                model_entry(dist.unwrap(self.model)),
                step=self.step,
                epoch=self.epoch,
                config=conf_to_dict(self.conf),
            ),
            self.run_dir / "giif.pth",
        )

    def resume(self) -> None:
        path = latest_checkpoint(self.run_dir)
        if path is None:
            raise CheckpointError(
                f"--resume: no checkpoint in {checkpoint_dir(self.run_dir)} (nothing to resume)"
            )
        ckpt = load_checkpoint(path, stage=self.stage)
        check_giif_arch(ckpt["model"], dist.unwrap(self.model), what="GIIF")
        self.model.load_state_dict(ckpt["model"]["sd"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.step, self.epoch = ckpt["step"], ckpt["epoch"]
        if "rng" in ckpt:
            torch.set_rng_state(ckpt["rng"])
        self._resume_extra(ckpt)
        self.log.info("resumed from %s at epoch %d, step %d", path, self.epoch, self.step)

    def _resume_extra(self, ckpt: dict) -> None:
        """Hook for subclasses (the discriminator stage restores its network here)."""

    # ------------------------------------------------------------------ training
    def _draw_scale(self) -> float:
        tconf = self.conf.get_config("train")
        lo, hi = tconf.get_float("scale_min"), tconf.get_float("scale_max")
        # Seeded by the step so every DDP rank draws the same scale and a resumed run continues the sequence.
        u = torch.rand((), generator=torch.Generator().manual_seed(self.seed * 100003 + self.step))
        return float(lo + (hi - lo) * u)

    def lr_camera(self) -> LRCamera:
        """The ``camera`` degradation's parameter ranges, ``data.lr_camera``."""
        return read_section(LRCamera, self.conf, "data.lr_camera")

    def train_lr(self, hr: torch.Tensor) -> torch.Tensor:
        """The LR input of a training batch ``hr (B, 3, H, W)``: the step's scale (``_draw_scale``) and
        ``train.degradation``; the ``camera`` degradation draws per image from generators seeded by the run's
        seed, the step, the DDP rank and the image's place in the batch (a resumed run sees the same inputs)."""
        mode = self.conf.get_string("train.degradation")
        generators = None
        if mode == "camera":
            seeds = [identity_seed("train", self.seed, self.step, dist.rank(), b) for b in range(hr.shape[0])]
            generators = seeded_generators(seeds)
        return degrade(
            hr, scale=self._draw_scale(), mode=mode, camera=self.lr_camera(), generators=generators
        )

    def _queries(self, hr: torch.Tensor):
        """Coordinates, cells and targets of the supervised HR pixels: the whole grid or a random patch."""
        B, _, H, W = hr.shape
        p = self.conf.get_int("train.patch_size")
        coord = make_coord((H, W), flatten=False, device=hr.device, dtype=hr.dtype)  # (H, W, 2)
        if 0 < p < min(H, W):
            g = torch.Generator().manual_seed(self.seed * 7919 + self.step)
            y0 = int(torch.randint(0, H - p + 1, (), generator=g))
            x0 = int(torch.randint(0, W - p + 1, (), generator=g))
            coord = coord[y0 : y0 + p, x0 : x0 + p]
            rows, cols = slice(y0, y0 + p), slice(x0, x0 + p)
        else:
            rows, cols = slice(0, H), slice(0, W)
        h, w = coord.shape[:2]
        coord = coord.reshape(1, h * w, 2).expand(B, -1, -1)
        cell = coord.new_tensor([2.0 / H, 2.0 / W]).expand(B, h * w, 2)
        return coord, cell, (rows, cols), (h, w)

    def predict_patch(self, model, lr, normal_map, hr):
        """GIIF prediction for the supervised pixels: ``(pred, target, mask_region)`` as images ``(B,3,h,w)``."""
        coord, cell, (rows, cols), (h, w) = self._queries(hr)
        pred = model(lr, normal_map, coord, cell)  # (B, h*w, 3)
        pred = pred.transpose(1, 2).reshape(hr.shape[0], 3, h, w)
        return pred, hr[:, :, rows, cols], (rows, cols)

    def sr_losses(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        tconf = self.conf.get_config("train")
        losses = {"l1": tconf.get_float("l1_weight") * F.l1_loss(pred, target)}
        if self.perceptual_loss is not None:
            losses["perceptual"] = tconf.get_float("perceptual_weight") * self.perceptual_loss(pred, target)
        return losses

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        hr = batch["hr"].to(self.device)
        normal_map = batch["normal_map"].to(self.device)
        lr = self.train_lr(hr)
        pred, target, _ = self.predict_patch(self.ddp_model, lr, normal_map, hr)
        losses = self.sr_losses(pred, target)
        self._backward_and_step(losses)
        self._last = {"lr": lr, "pred": pred.detach(), "target": target, "normal_map": normal_map}
        return losses

    def _backward_and_step(self, losses: dict[str, torch.Tensor]) -> None:
        total = sum(losses.values())
        check_finite(self.step, {**losses, "total": total})
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        clip = self.conf.get_float("train.grad_clip")
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        self.scheduler.step()

    def _log_images(self) -> None:
        last = self._last
        size = last["target"].shape[-2:]
        grid = make_grid(
            [
                F.interpolate(last["lr"][:1], size=tuple(size), mode="nearest")[0],
                last["pred"][0].clamp(0, 1),
                last["target"][0],
            ],
            labels=["LR", "prediction", "GT"],
        )
        self.log.log_image("train/grid", grid, self.step)
        if dist.is_main():
            write_image(self.run_dir / "train_vis" / f"{self.step:07d}.png", grid)

    def train(self) -> dict:
        """Run the configured epochs (or ``max_steps``), checkpointing and validating as configured."""
        tconf = self.conf.get_config("train")
        loader, sampler = self._train_loader()
        epochs, max_steps = tconf.get_int("epochs"), tconf.get_int("max_steps")
        steps_per_epoch = len(loader)
        if steps_per_epoch == 0:
            raise ConfigError("the training set is smaller than one batch: lower train.batch_size")
        total = epochs * steps_per_epoch if max_steps < 0 else min(max_steps, epochs * steps_per_epoch)
        self.log.info(
            "training %s for %d steps (%d per epoch), scales x%g..x%g",
            self.stage,
            total,
            steps_per_epoch,
            tconf.get_float("scale_min"),
            tconf.get_float("scale_max"),
        )
        bar = self.log.progress(range(total), desc=self.stage, initial=self.step, total=total)
        start = time.time()
        self.model.train()
        while self.step < total:
            if sampler is not None:
                sampler.set_epoch(self.epoch)
            self._loader_generator.manual_seed(self.seed * 1000003 + self.epoch)
            skip = self.step - self.epoch * steps_per_epoch  # batches already done in this epoch (resume)
            for i, batch in enumerate(loader):
                if i < skip:
                    continue
                if self.step >= total:
                    break
                losses = self.train_step(batch)
                self.step += 1
                bar.update(1)
                if self.step % tconf.get_int("log_every") == 0 or self.step == total:
                    scalars = {k: float(dist.all_reduce_mean(v.detach())) for k, v in losses.items()}
                    scalars["learning_rate"] = self.optimizer.param_groups[0]["lr"]
                    self.log.log_losses(self.step, scalars, prefix="train")
                    bar.set_postfix({k: f"{v:.4f}" for k, v in scalars.items() if k != "learning_rate"})
                if tconf.get_int("vis_every") > 0 and self.step % tconf.get_int("vis_every") == 0:
                    self._log_images()
                if tconf.get_int("ckpt_every") > 0 and self.step % tconf.get_int("ckpt_every") == 0:
                    self.save()
                if tconf.get_int("val_every") > 0 and self.step % tconf.get_int("val_every") == 0:
                    self.quick_validation()
            else:
                self.epoch += 1
                self.save()
        bar.close()
        self.save()
        if self.conf.get_bool("train.check_replicas"):
            self.check_replicas()
        elapsed = time.time() - start
        self.log.info(
            "%s training done: %d steps in %.1f s (%.3f s/step)",
            self.stage,
            self.step,
            elapsed,
            elapsed / max(1, total),
        )
        return {"steps": self.step, "seconds": elapsed}

    @torch.no_grad()
    def check_replicas(self) -> list[float]:
        """Check that every DDP replica holds the same weights; writes ``replica_checksums.json``.

        The checksum is the float64 sum of ``p * (i + 1)`` over parameter entries (order-sensitive).

        Raises:
            RuntimeError: the replicas differ (a DDP setup error).
        """
        flat = torch.cat([p.detach().double().reshape(-1) for p in dist.unwrap(self.model).parameters()])
        checksum = float((flat * torch.arange(1, flat.numel() + 1, dtype=torch.float64)).sum())
        sums = [checksum]
        if dist.world_size() > 1:
            import torch.distributed as tdist

            sums = [None] * dist.world_size()
            tdist.all_gather_object(sums, checksum)
        if dist.is_main():
            atomic_write_text(self.run_dir / "replica_checksums.json", json.dumps(sums))
        if max(sums) - min(sums) > 1e-9 * max(1.0, abs(sums[0])):
            raise RuntimeError(f"DDP replicas diverged: parameter checksums {sums}")
        self.log.info("replica check: %d replica(s) hold identical weights", len(sums))
        return sums

    @torch.no_grad()
    def quick_validation(self) -> float:
        """PSNR (masked) of GIIF at ``train.val_scale`` on the validation set; logged to TensorBoard."""
        report = self.evaluate(scales=[self.conf.get_float("train.val_scale")], with_perceptual=False)
        key = next(iter(report["results"]["giif"]))
        value = report["results"]["giif"][key]["psnr_masked"]
        self.log.log_scalars(self.step, {"psnr_masked": value}, prefix="val")
        self.model.train()
        return value

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, scales=None, with_perceptual: bool = True, vis_dir=None) -> dict:
        econf = self.conf.get_config("eval")
        model = dist.unwrap(self.model)
        model.eval()
        chunk = econf.get_int("chunk")

        def predict(lr, normal_map, size):
            return model.decode(lr, normal_map if model.use_normal else None, size, chunk=chunk, clamp=True)

        perceptual = None
        if with_perceptual and econf.get_string("perceptual") != "none":
            perceptual = PerceptualMetric(econf.get_string("perceptual"), net="alex")
        return evaluate_sr(
            predict,
            self.val_batches(),
            scales=scales or econf.get_list("scales"),
            degradation=econf.get_string("degradation"),
            camera=self.lr_camera(),
            perceptual=perceptual,
            device=self.device,
            vis_dir=vis_dir,
            max_vis=econf.get_int("max_vis"),
            method_name="giif",
        )

    def run_eval(self, save_vis: bool = False) -> dict:
        """The ``--eval`` command: the full table, written to ``metrics.json`` and the console."""
        report = self.evaluate(vis_dir=self.run_dir / "eval_vis" if save_vis else None)
        report["model"] = registry.model_spec(dist.unwrap(self.model))["name"]
        report.update(self.extra_report())
        if dist.is_main():
            path = self.run_dir / "metrics.json"
            atomic_write_text(path, json.dumps(report, indent=2))
            self.log.info("SR evaluation (%s):\n%s", report["model"], format_sr_table(report))
            self.log.info("metrics written to %s", path)
        return report

    def extra_report(self) -> dict:
        """Entries a subclass adds to ``metrics.json`` (the discriminator stage: its diagnostics)."""
        return {}
