"""Stage 2: adversarial training of GIIF with a U-Net discriminator (``main_disc.py``).

GIIF starts from the stage-1 checkpoint (``--model_path``). Per step, on the same batches, scales and
patches as stage 1:

* GIIF update: ``l1 + perceptual + adv_weight * gan(D(pred), generator targets)`` with D frozen;
* D update(s): ``gan(D(gt), real targets) + gan(D(pred.detach()), fake targets)``.

Targets are per pixel and depend on the MANO mask (reference): real 1 inside / 0.5 outside, fake 0 /
0.5, generator 1 / 0.5 (``models.discriminator.disc_targets``); ``adv.gan_mode`` picks BCE (reference)
or LSGAN. Differences from the reference code: GIIF's learning rate follows ``adv.giif_lr_decay`` and
the discriminator's ``adv.disc_lr_decay``, each stepped once per step (the reference attaches its only
scheduler to the discriminator and steps it twice); train and validation subjects do not overlap.
"""

from __future__ import annotations

from pathlib import Path

import torch

from datasets.preprocess import degrade
from models import registry
from models.discriminator import disc_targets, gan_loss
from trainers.giif_trainer import GiifTrainer, lr_lambda, model_spec_from_conf
from utils import dist
from utils.checkpoint import (
    build_model,
    check_arch_matches,
    load_checkpoint,
    make_checkpoint,
    model_entry,
    save_atomic,
)
from utils.config import ConfigError, conf_to_dict
from utils.run_logging import check_finite


class DiscTrainer(GiifTrainer):
    """GIIF + discriminator. Shares data, logging, checkpoints and evaluation with ``GiifTrainer``."""

    stage = "disc"

    def build_disc(self, model_path_disc: str | None = None) -> None:
        spec = model_spec_from_conf(self.conf, "model_disc")
        if model_path_disc:
            ckpt = load_checkpoint(model_path_disc, stage="disc")
            key = "disc" if "disc" in ckpt else "model"
            check_arch_matches(ckpt[key], registry.model_spec(registry.make(spec)), what="discriminator")
            disc = build_model(ckpt, registry.make, key=key)
            self.log.info("discriminator initialised from %s", model_path_disc)
        else:
            disc = registry.make(spec)
        self.disc = disc.to(self.device)
        p = self.conf.get_int("train.patch_size")
        side = p if p > 0 else self.conf.get_int("data.hr_size")
        if side % 8:
            raise ConfigError(
                f"the discriminator needs image sides divisible by 8: train.patch_size / data.hr_size gives {side}"
            )

    def giif_lr_decay(self) -> float:
        return self.conf.get_float("adv.giif_lr_decay")

    def build_optim(self) -> None:
        super().build_optim()
        adv = self.conf.get_config("adv")
        self.ddp_disc = dist.wrap_ddp(self.disc, self.device)
        self.disc_optimizer = torch.optim.Adam(self.disc.parameters(), lr=adv.get_float("disc_learning_rate"))
        self.disc_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.disc_optimizer, lr_lambda(adv.get_float("disc_lr_decay"), self.conf.get_float("train.lr_floor")))

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        adv = self.conf.get_config("adv")
        mode = adv.get_string("gan_mode")
        hr = batch["hr"].to(self.device)
        mask = batch["mask"].to(self.device)
        normal_map = batch["normal_map"].to(self.device)
        lr = degrade(hr, scale=self._draw_scale(), mode=self.conf.get_string("train.degradation"))
        pred, target, (rows, cols) = self.predict_patch(self.ddp_model, lr, normal_map, hr)
        mask = mask[:, :, rows, cols]

        # GIIF update. D is frozen and in eval mode (no spectral-norm power iteration); gradients reach
        # the prediction through it.
        self.disc.requires_grad_(False)
        self.disc.eval()
        losses = self.sr_losses(pred, target)
        losses["adv"] = adv.get_float("adv_weight") * gan_loss(self.disc(pred), disc_targets(mask, "generator"), mode)
        self._backward_and_step(losses)

        # Discriminator update(s).
        self.disc.requires_grad_(True)
        self.disc.train()
        fake = pred.detach()
        for _ in range(adv.get_int("disc_steps")):
            d_real = gan_loss(self.ddp_disc(target), disc_targets(mask, "real"), mode)
            d_fake = gan_loss(self.ddp_disc(fake), disc_targets(mask, "fake"), mode)
            d_loss = d_real + d_fake
            check_finite(self.step, {"disc_real": d_real, "disc_fake": d_fake})
            self.disc_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            self.disc_optimizer.step()
        self.disc_scheduler.step()
        self._last = {"lr": lr, "pred": fake, "target": target, "normal_map": normal_map}
        return {**losses, "disc_real": d_real.detach(), "disc_fake": d_fake.detach()}

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        state = super()._state()
        state["disc"] = model_entry(dist.unwrap(self.disc))
        state["disc_optimizer"] = self.disc_optimizer.state_dict()
        state["disc_scheduler"] = self.disc_scheduler.state_dict()
        return state

    def save(self) -> None:
        """``checkpoints/last.pth`` (both networks, resumable), ``giif.pth`` and ``disc.pth``."""
        super().save()
        if dist.is_main():
            save_atomic(make_checkpoint("disc", model_entry(dist.unwrap(self.disc)), step=self.step,
                                        epoch=self.epoch, config=conf_to_dict(self.conf)),
                        Path(self.run_dir) / "disc.pth")

    def _resume_extra(self, ckpt: dict) -> None:
        check_arch_matches(ckpt["disc"], registry.model_spec(self.disc), what="discriminator")
        self.disc.load_state_dict(ckpt["disc"]["sd"])
        self.disc_optimizer.load_state_dict(ckpt["disc_optimizer"])
        self.disc_scheduler.load_state_dict(ckpt["disc_scheduler"])
