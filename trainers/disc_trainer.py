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

Diagnostics (measured, never part of the update): every ``train.log_every`` steps the trainer records
D's accuracy on real and on fake hand pixels (mean over the steps since the last record) and the norm of
the weighted adversarial term's gradient with respect to GIIF's output divided by the L1 term's
(``torch.autograd.grad`` on the prediction, graph retained, no ``.grad`` touched, no random draw), to
TensorBoard (``disc/*``) and, summarised, to ``metrics.json["discriminator"]``.

``main_disc.py --eval --model_path_disc D`` also evaluates a discriminator on the validation subjects:
the fraction of ground-truth hand pixels it calls real and, per evaluation scale, of GIIF's SR hand pixels
it calls fake (``metrics.json["discriminator_eval"]``; the network is rebuilt from its checkpoint's own
spec, like GIIF).
"""

from __future__ import annotations

from pathlib import Path

import torch

from models import registry
from models.discriminator import disc_targets, gan_loss
from trainers.giif_trainer import GiifTrainer, lr_lambda, make_from_conf, model_spec_from_conf
from trainers.sr_eval import eval_lr
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

DIAGNOSTICS = ("d_acc_real", "d_acc_fake", "grad_norm_adv", "grad_norm_l1", "grad_ratio_adv_l1")


def disc_accuracy(logits: torch.Tensor, mask: torch.Tensor, kind: str, mode: str) -> torch.Tensor:
    """Fraction of hand pixels (``mask > 0.5``) that D classifies correctly.

    Outside the hand the targets are 0.5 (neither class), so those pixels are not counted. A pixel is
    called real when ``sigmoid(logit) > 0.5`` (``mode='bce'``) or when the raw output is above 0.5
    (``'lsgan'``, which regresses the targets 1 / 0 directly).

    Args:
        logits: ``(B, 1, H, W)`` raw discriminator outputs.
        mask: ``(B, 1, H, W)`` hand mask.
        kind: 'real' (correct = called real) or 'fake' (correct = called fake).
        mode: the ``gan_loss`` mode.

    Returns:
        scalar in [0, 1] (NaN when the mask is empty).
    """
    correct, hand = disc_counts(logits, mask, kind, mode)
    return correct / hand


def disc_counts(
    logits: torch.Tensor, mask: torch.Tensor, kind: str, mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(correct, hand)``: the hand pixels D classifies correctly and all hand pixels (float scalars); see
    :func:`disc_accuracy`."""
    called_real = logits > (0.0 if mode == "bce" else 0.5)
    correct = called_real if kind == "real" else ~called_real
    hand = mask > 0.5
    return (correct & hand).sum().float(), hand.sum().float()


def summarise_history(history: list[dict], max_points: int = 20) -> dict:
    """Summary of the diagnostics records: means over the first and the last quarter of them, and a
    series of about ``max_points`` records (every k-th one, plus the last)."""
    if not history:
        return {}
    quarter = max(1, len(history) // 4)

    def mean(records: list[dict], key: str) -> float:
        values = [r[key] for r in records if key in r]
        return sum(values) / len(values) if values else float("nan")

    stride = max(1, -(-len(history) // max_points))
    series = history[::stride]
    if series[-1] is not history[-1]:
        series = series + [history[-1]]
    return {
        "records": len(history),
        "first_quarter": {k: mean(history[:quarter], k) for k in DIAGNOSTICS},
        "last_quarter": {k: mean(history[-quarter:], k) for k in DIAGNOSTICS},
        "series": series,
    }


class DiscTrainer(GiifTrainer):
    """GIIF + discriminator. Shares data, logging, checkpoints and evaluation with ``GiifTrainer``."""

    stage = "disc"
    # Set by load_eval_disc (--eval --model_path_disc): the discriminator judge_validation evaluates.
    eval_disc: torch.nn.Module | None = None
    eval_disc_mode: str = "bce"
    eval_disc_path: str = ""

    def build_disc(self, model_path_disc: str | None = None) -> None:
        spec = model_spec_from_conf(self.conf, "model_disc")
        if model_path_disc:
            ckpt = load_checkpoint(model_path_disc, stage="disc")
            key = "disc" if "disc" in ckpt else "model"
            check_arch_matches(
                ckpt[key], registry.model_spec(make_from_conf(spec, "model_disc")), what="discriminator"
            )
            disc = build_model(ckpt, registry.make, key=key)
            self.log.info("discriminator initialised from %s", model_path_disc)
        else:
            disc = make_from_conf(spec, "model_disc")
        self.disc = disc.to(self.device)
        self.disc_history: list[dict] = []  # one diagnostics record per train.log_every steps
        self._acc_sums = {"d_acc_real": 0.0, "d_acc_fake": 0.0, "n": 0}
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
            self.disc_optimizer,
            lr_lambda(adv.get_float("disc_lr_decay"), self.conf.get_float("train.lr_floor")),
        )

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        adv = self.conf.get_config("adv")
        mode = adv.get_string("gan_mode")
        hr = batch["hr"].to(self.device)
        mask = batch["mask"].to(self.device)
        normal_map = batch["normal_map"].to(self.device)
        lr = self.train_lr(hr)
        pred, target, (rows, cols) = self.predict_patch(self.ddp_model, lr, normal_map, hr)
        mask = mask[:, :, rows, cols]

        # GIIF update. D is frozen and in eval mode (no spectral-norm power iteration); gradients reach
        # the prediction through it.
        self.disc.requires_grad_(False)
        self.disc.eval()
        losses = self.sr_losses(pred, target)
        losses["adv"] = adv.get_float("adv_weight") * gan_loss(
            self.disc(pred), disc_targets(mask, "generator"), mode
        )
        record_step = (self.step + 1) % self.conf.get_int("train.log_every") == 0
        grads = self._grad_norms(losses, pred) if record_step else {}
        self._backward_and_step(losses)

        # Discriminator update(s).
        self.disc.requires_grad_(True)
        self.disc.train()
        fake = pred.detach()
        for _ in range(adv.get_int("disc_steps")):
            d_real_logits, d_fake_logits = self.ddp_disc(target), self.ddp_disc(fake)
            d_real = gan_loss(d_real_logits, disc_targets(mask, "real"), mode)
            d_fake = gan_loss(d_fake_logits, disc_targets(mask, "fake"), mode)
            d_loss = d_real + d_fake
            check_finite(self.step, {"disc_real": d_real, "disc_fake": d_fake})
            self.disc_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            self.disc_optimizer.step()
        self.disc_scheduler.step()
        self._record(d_real_logits, d_fake_logits, mask, mode, grads if record_step else None)
        self._last = {"lr": lr, "pred": fake, "target": target, "normal_map": normal_map}
        return {**losses, "disc_real": d_real.detach(), "disc_fake": d_fake.detach()}

    # ------------------------------------------------------------------ diagnostics
    def _grad_norms(self, losses: dict[str, torch.Tensor], pred: torch.Tensor) -> dict[str, float]:
        """Norms of the weighted adversarial and L1 terms' gradients w.r.t. GIIF's output ``pred``.

        ``torch.autograd.grad`` with the graph retained: no parameter's ``.grad`` is written and nothing
        random is drawn, so the training step that follows is the one an unmeasured run takes.
        """
        norms = {}
        for name, key in (("grad_norm_adv", "adv"), ("grad_norm_l1", "l1")):
            term = losses[key]
            if term.requires_grad:
                (grad,) = torch.autograd.grad(term, pred, retain_graph=True, allow_unused=True)
                norms[name] = 0.0 if grad is None else float(grad.norm())
            else:
                norms[name] = 0.0
        norms["grad_ratio_adv_l1"] = norms["grad_norm_adv"] / max(norms["grad_norm_l1"], 1e-12)
        return norms

    @torch.no_grad()
    def _record(self, real_logits, fake_logits, mask, mode: str, grads: dict | None) -> None:
        """Accumulate D's accuracies; on a record step, log and store them with the gradient norms."""
        sums = self._acc_sums
        sums["d_acc_real"] += float(disc_accuracy(real_logits, mask, "real", mode))
        sums["d_acc_fake"] += float(disc_accuracy(fake_logits, mask, "fake", mode))
        sums["n"] += 1
        if grads is None:
            return
        record = {
            "step": self.step + 1,
            "d_acc_real": sums["d_acc_real"] / sums["n"],
            "d_acc_fake": sums["d_acc_fake"] / sums["n"],
            **grads,
        }
        self._acc_sums = {"d_acc_real": 0.0, "d_acc_fake": 0.0, "n": 0}
        self.disc_history.append(record)
        self.log.log_scalars(record["step"], {k: v for k, v in record.items() if k != "step"}, prefix="disc")

    def extra_report(self) -> dict:
        """After training, the stage's settings and diagnostics (``discriminator``); after
        :meth:`load_eval_disc`, that discriminator's accuracy on the validation subjects (``discriminator_eval``)."""
        extra = {}
        history = getattr(self, "disc_history", None)
        if history:
            adv = self.conf.get_config("adv")
            extra["discriminator"] = {
                "steps": self.step,
                "adv_weight": adv.get_float("adv_weight"),
                "disc_learning_rate": adv.get_float("disc_learning_rate"),
                "gan_mode": adv.get_string("gan_mode"),
                **summarise_history(history),
            }
        if self.eval_disc is not None:
            extra["discriminator_eval"] = self.judge_validation()
        return extra

    def load_eval_disc(self, path: str) -> None:
        """The discriminator of ``path`` (``disc.pth``, or a stage-2 ``last.pth``) for :meth:`judge_validation`,
        rebuilt from the checkpoint's own spec; its GAN mode is the one it was trained with.

        Raises:
            CheckpointError: not a stage-2 checkpoint. ConfigError: ``data.hr_size`` not divisible by 8.
        """
        ckpt = load_checkpoint(path, stage="disc")
        self.eval_disc = build_model(ckpt, registry.make, key="disc" if "disc" in ckpt else "model")
        self.eval_disc = self.eval_disc.to(self.device).eval()
        trained = (ckpt.get("config") or {}).get("adv", {})
        self.eval_disc_mode = trained.get("gan_mode", self.conf.get_string("adv.gan_mode"))
        self.eval_disc_path = str(path)
        side = self.conf.get_int("data.hr_size")
        if side % 8:
            raise ConfigError(f"the discriminator needs image sides divisible by 8: data.hr_size = {side}")
        self.log.info("discriminator for the evaluation: %s (%s)", path, self.eval_disc_mode)

    @torch.no_grad()
    def judge_validation(self) -> dict:
        """How well the :meth:`load_eval_disc` discriminator tells the validation subjects' ground truth from
        GIIF's SR, at every evaluation scale (the held-out counterpart of the training diagnostics).

        Returns:
            ``{"checkpoint", "gan_mode", "num_images", "d_acc_real", "d_acc_fake": {scale_key: value}}``:
            the fraction of ground-truth hand pixels called real, and per scale of SR hand pixels called fake.
        """
        econf = self.conf.get_config("eval")
        model, disc, mode = dist.unwrap(self.model).eval(), self.eval_disc, self.eval_disc_mode
        scales = [float(s) for s in econf.get_list("scales")]
        real = torch.zeros(2, dtype=torch.float64)
        fake = {s: torch.zeros(2, dtype=torch.float64) for s in scales}
        num_images = 0
        for batch in self.val_batches():
            hr, mask = batch["hr"].to(self.device), batch["mask"].to(self.device)
            normal_map = batch["normal_map"].to(self.device) if model.use_normal else None
            num_images += hr.shape[0]
            real += torch.stack(disc_counts(disc(hr), mask, "real", mode)).double().cpu()
            for scale in scales:
                lr = eval_lr(hr, scale, econf.get_string("degradation"), batch, self.lr_camera())
                sr = model.decode(
                    lr, normal_map, tuple(hr.shape[-2:]), chunk=econf.get_int("chunk"), clamp=True
                )
                fake[scale] += torch.stack(disc_counts(disc(sr), mask, "fake", mode)).double().cpu()
        result = {
            "checkpoint": self.eval_disc_path,
            "gan_mode": mode,
            "num_images": num_images,
            "d_acc_real": float(real[0] / real[1]),
            "d_acc_fake": {f"x{s:g}": float(counts[0] / counts[1]) for s, counts in fake.items()},
        }
        self.log.info(
            "discriminator on the validation subjects: GT hand pixels called real %.3f; SR called fake %s",
            result["d_acc_real"],
            ", ".join(f"{k} {v:.3f}" for k, v in result["d_acc_fake"].items()),
        )
        return result

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        state = super()._state()
        state["disc_history"] = list(self.disc_history)
        state["disc_acc_sums"] = dict(
            self._acc_sums
        )  # so a resumed run records what an uninterrupted one does
        state["disc"] = model_entry(dist.unwrap(self.disc))
        state["disc_optimizer"] = self.disc_optimizer.state_dict()
        state["disc_scheduler"] = self.disc_scheduler.state_dict()
        return state

    def save(self) -> None:
        """``checkpoints/last.pth`` (both networks, resumable), ``giif.pth`` and ``disc.pth``."""
        super().save()
        if dist.is_main():
            save_atomic(
                make_checkpoint(
                    "disc",
                    model_entry(dist.unwrap(self.disc)),
                    step=self.step,
                    epoch=self.epoch,
                    config=conf_to_dict(self.conf),
                ),
                Path(self.run_dir) / "disc.pth",
            )

    def _resume_extra(self, ckpt: dict) -> None:
        check_arch_matches(ckpt["disc"], registry.model_spec(self.disc), what="discriminator")
        self.disc.load_state_dict(ckpt["disc"]["sd"])
        self.disc_optimizer.load_state_dict(ckpt["disc_optimizer"])
        self.disc_scheduler.load_state_dict(ckpt["disc_scheduler"])
        self.disc_history = list(ckpt.get("disc_history", []))
        self._acc_sums = dict(ckpt.get("disc_acc_sums", {"d_acc_real": 0.0, "d_acc_fake": 0.0, "n": 0}))
