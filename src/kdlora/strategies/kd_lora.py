"""KD-LoRA: a small student with adapters, distilled from the fine-tuned FFT teacher of the same
family, task and seed.

L = alpha · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − alpha) · CE(s, y); for regression
(STS-B) MSE replaces both terms. Teacher logits come from a cache keyed by dataset index, so a
shuffled batch always meets its own teacher rows (the published code paired them by position).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from kdlora.errors import UserError
from kdlora.models import check_target_modules, load_classifier, model_names, student_layers
from kdlora.checkpoints import checkpoint_dir, teacher_problem
from kdlora.seeding import seed_everything
from kdlora.strategies.base import STRATEGIES, RunContext, Setup, Strategy, register
from kdlora.strategies.lora import with_adapters
from kdlora.variants import VARIANTS

CACHE_DIR = "teacher_logits"


def distillation_loss(student_logits, teacher_logits, hard_loss, *, temperature: float, alpha: float,
                      regression: bool):
    import torch.nn.functional as F

    if regression:
        soft = F.mse_loss(student_logits.view(-1), teacher_logits.view(-1).to(student_logits.dtype))
    else:
        t = temperature
        soft = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.softmax(teacher_logits / t, dim=-1),
                        reduction="batchmean") * (t * t)
    return alpha * soft + (1.0 - alpha) * hard_loss


def teacher_command(cfg) -> str:
    t = STRATEGIES.get(cfg.strategy).teacher(cfg)
    sets = "".join(f" --set {k}={v}" for k, v in (("lr", t.lr), ("epochs", t.epochs),
                                                   ("batch_size", t.batch_size)))
    return (f"kdlora train --family {cfg.family} --task {cfg.task} --strategy {t.strategy} --seed {cfg.seed} "
            f"--results DIR{sets}")


def find_teacher(cfg, results_dir: Path):
    """The teacher's record and checkpoint, checked against the fingerprint its record keeps."""
    teacher_id = STRATEGIES.get(cfg.strategy).teacher(cfg).run_id
    record, problem = teacher_problem(results_dir, teacher_id)
    if problem is not None:
        raise UserError(f"{cfg.strategy} needs the completed FFT teacher run {teacher_id} in {results_dir} ({problem}); "
                        f"train it with: {teacher_command(cfg)} (or add --train-teacher)")
    return record, checkpoint_dir(results_dir, teacher_id)


def data_fingerprint(split, text_fields) -> str:
    digest = hashlib.sha256()
    for col in ("idx", *text_fields):
        digest.update("\x1f".join(map(str, split[col])).encode())
    return digest.hexdigest()


def teacher_logits(ckpt: Path, split, spec, max_length: int, device, batch_size: int = 64):
    """(idx, logits) of the teacher over a split, in dataset order, in eval mode."""
    import torch

    from kdlora.data.tokenize import make_dataloader, tokenize_splits
    from kdlora.models import load_tokenizer
    from kdlora.train.loop import model_inputs

    tok = load_tokenizer(str(ckpt))
    data = tokenize_splits({"train": split}, tok, spec, max_length)["train"]
    model = load_classifier(str(ckpt), spec.num_labels).to(device).eval()
    loader = make_dataloader(data, tok, batch_size, shuffle=False, seed=0)
    idx, logits = [], []
    with torch.no_grad():
        for batch in loader:
            idx.append(batch["idx"])
            out = model(**model_inputs(model, {k: v.to(device) for k, v in batch.items()}))
            logits.append(out.logits.float().cpu())
    return torch.cat(idx), torch.cat(logits)


@register
class KdLora(Strategy):
    name = "kd-lora"
    label = "KD-LoRA"
    order = 2
    color, colormap = "#D55E00", "Reds"
    default_lr = 5e-4
    trains_student = True
    compare_with = "lora"  # per variant: distilled student vs LoRA-only on the teacher-size model
    teacher_strategy = "fft"
    # student field -> the teacher run's field it sets (the grid derives them from its fft section)
    teacher_fields = {"teacher_lr": "lr", "teacher_epochs": "epochs", "teacher_batch_size": "batch_size"}
    fields = {
        "student_model": (str | None, None, "hub id or local path of the student (default: the family's)"),
        "kd_temperature": (float, 2.0, "softmax temperature T of the distillation term", (0, False, None, False)),
        "kd_alpha": (float, 0.5, "weight of the distillation term; 1 - kd_alpha weighs the label loss",
                     (0, True, 1, True)),
        "teacher_lr": (float | None, None, "the FFT teacher run's lr (default: FFT's default lr)",
                       (0, False, None, False)),
        "teacher_epochs": (float | None, None, "the FFT teacher run's epochs (default: epochs)", (0, False, None, False)),
        "teacher_batch_size": (int | None, None, "the FFT teacher run's batch_size (default: batch_size)",
                               (0, False, None, False)),
    }

    def resolve(self, data: dict) -> dict:
        data = dict(data)
        data["teacher_lr"] = data.get("teacher_lr") or STRATEGIES.get(self.teacher_strategy).default_lr
        data["teacher_epochs"] = data.get("teacher_epochs") or data.get("epochs", 3.0)
        data["teacher_batch_size"] = data.get("teacher_batch_size") or data.get("batch_size", 32)
        return data

    def teacher_inputs(self, cfg):
        """The FFT run whose fine-tuned model teaches this run: the student's shared settings,
        with the teacher_* fields as the teacher's own optimisation."""
        own = {field: getattr(cfg, mine) for mine, field in self.teacher_fields.items()}
        return {"strategy": self.teacher_strategy, **own, **cfg.shared_with_teacher()}

    def check(self, cfg) -> None:
        if model_names(cfg.family, cfg.teacher_model, cfg.student_model)[1] is None:
            raise UserError(f"family {cfg.family!r} has no student model; set --set student_model=NAME")
        VARIANTS.get(cfg.variant).check(cfg)
        check_target_modules(model_names(cfg.family, cfg.teacher_model, cfg.student_model)[1], cfg.target_modules)

    def setup(self, ctx: RunContext) -> Setup:
        from kdlora.strategies.logit_cache import TeacherLogitCache

        cfg = ctx.cfg
        record, ckpt = find_teacher(cfg, ctx.results_dir)
        split = ctx.splits["train"]
        # the checkpoint's verified fingerprint covers weights, config and tokenizer, and no path:
        # a study moved elsewhere keeps its caches
        key = {"teacher_run_id": record.run_id, "teacher_checkpoint": record.weights_fingerprint,
               "task": ctx.spec.name, "split": "train", "max_length": cfg.max_length,
               "size": len(split), "data": data_fingerprint(split, ctx.spec.text_fields)}
        cache = TeacherLogitCache.build_or_load(
            Path(ctx.results_dir) / CACHE_DIR, key,
            lambda: teacher_logits(ckpt, split, ctx.spec, cfg.max_length, ctx.device))
        # Loading the teacher draws random numbers (new-weight init), but only when the cache is
        # missed: reseed, so the student starts the same whether or not another run built it.
        seed_everything(cfg.seed)
        _, student = model_names(cfg.family, cfg.teacher_model, cfg.student_model)
        model = load_classifier(student, ctx.spec.num_labels, layers=student_layers(cfg.family, cfg.student_model))
        model = with_adapters(model, ctx)

        def loss(batch, outputs):
            # idx stays on the host (train/loop.py): the lookup needs no device sync
            t_logits = cache.lookup(batch["idx"].cpu()).to(outputs.logits.device, non_blocking=True)
            return distillation_loss(outputs.logits, t_logits, outputs.loss, temperature=cfg.kd_temperature,
                                     alpha=cfg.kd_alpha, regression=ctx.spec.is_regression)

        eff = {"teacher_run_id": record.run_id, "teacher_cache_build_s": cache.build_seconds,
               "teacher_cache_hit": not cache.built}
        return Setup(model=model, loss=loss, efficiency=eff, teacher_run_id=record.run_id)
