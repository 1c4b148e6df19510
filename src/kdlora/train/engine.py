"""One run's stages, top to bottom: data, model (from the strategy), measure, train, evaluate, save."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from kdlora.models import count_params, load_tokenizer, model_names
from kdlora.seeding import seed_everything
from kdlora.strategies import STRATEGIES, RunContext, Setup
from kdlora.train import measure
from kdlora.train.epochs import SELECTION_PREFIX, EpochEvaluator, with_primary
from kdlora.train.evaluate import evaluate
from kdlora.train.loop import optimizer_steps, train_loop
from kdlora.variants import VARIANTS

EVAL_BATCH = 32  # also the batch of the inference latency, timed on the evaluation's own passes


def load_data(cfg, spec, tokenizer):
    from kdlora.data.loading import load_splits
    from kdlora.data.tokenize import tokenize_splits

    splits = load_splits(spec, cfg.data_dir, max_train_samples=cfg.max_train_samples,
                         max_eval_samples=cfg.max_eval_samples, seed=cfg.seed,
                         selection_fraction=cfg.selection_fraction)
    return splits, tokenize_splits(splits, tokenizer, spec, cfg.max_length)


def eval_loaders(tokenized, spec, tokenizer) -> dict[str, Any]:
    from kdlora.data.tokenize import make_dataloader

    # sorted by length (longest first): far less padding, and metrics do not depend on the order
    return {prefix: make_dataloader(tokenized[split], tokenizer, EVAL_BATCH, shuffle=False, seed=0,
                                    group_by_length=True)
            for split, prefix in spec.eval_splits}


def selection_loader(tokenized, tokenizer):
    """The selection set's loader (None when the run has none): for choosing, never reported."""
    from kdlora.data.loading import SELECTION
    from kdlora.data.tokenize import make_dataloader

    if SELECTION not in tokenized:
        return None
    return make_dataloader(tokenized[SELECTION], tokenizer, EVAL_BATCH, shuffle=False, seed=0, group_by_length=True)


def execute(cfg, spec, results_dir: Path, device: torch.device, callbacks=()) -> dict[str, Any]:
    from kdlora.data.tokenize import make_dataloader

    strategy = STRATEGIES.get(cfg.strategy)
    variant = VARIANTS.get(cfg.variant) if cfg.variant else None
    teacher, student = model_names(cfg.family, cfg.teacher_model, cfg.student_model)
    tokenizer = load_tokenizer(student if strategy.trains_student else teacher)

    # --- data: tokenised without padding; batches are padded to their own longest example ---
    splits, tokenized = load_data(cfg, spec, tokenizer)
    loader = make_dataloader(tokenized["train"], tokenizer, cfg.micro_batch_size, shuffle=True, seed=cfg.seed,
                             group_by_length=cfg.group_by_length, pin_memory=device.type == "cuda")
    total_steps = optimizer_steps(len(loader), cfg.grad_accum, cfg.epochs)

    # --- model and loss from the strategy; the seed is set right before any initialisation ---
    seed_everything(cfg.seed)
    ctx = RunContext(cfg=cfg, spec=spec, results_dir=results_dir, splits=splits, train_data=tokenized["train"],
                     total_steps=total_steps, device=device)
    prepared = prepare(strategy, variant, ctx)
    setup, model, trainable, total = prepared.setup, prepared.model, prepared.trainable, prepared.total

    # --- evaluation: the reported split(s), and the selection set that alone may choose ---
    evals = eval_loaders(tokenized, spec, tokenizer)
    sel_loader = selection_loader(tokenized, tokenizer)
    prefixes = tuple(prefix for _, prefix in spec.eval_splits)

    def reported() -> dict:
        return with_primary(evaluate(model, evals, spec, device, EVAL_BATCH).metrics, spec, cfg.metric_policy)

    def selection() -> dict:
        metrics = evaluate(model, {"": sel_loader}, spec, device, EVAL_BATCH).metrics
        return with_primary(metrics, spec, cfg.metric_policy, prefixes)

    epochs = EpochEvaluator(model, reported, selection if sel_loader is not None else None,
                            keep_best=cfg.select_best_epoch, variant=variant)
    per_epoch = cfg.eval_every_epoch or cfg.select_best_epoch

    def on_epoch_end(epoch: int) -> dict:
        return epochs.epoch_end(epoch) if per_epoch else {}

    with measure.peak_memory(device) as mem, measure.gpu_energy(device) as energy:
        result = train_loop(model, loader, cfg=cfg, device=device, total_steps=total_steps,
                            on_epoch_end=on_epoch_end, callbacks=callbacks, **prepared.loop_hooks())

    # --- evaluation and inference cost of the trained model (at the best epoch if asked) ---
    ev = evaluate(model, evals, spec, device, EVAL_BATCH)
    metrics = with_primary(ev.metrics, spec, cfg.metric_policy)
    metrics_selection = selection() if sel_loader is not None else {}
    if per_epoch and result.history:  # the loop does not evaluate after its last epoch: we just did
        result.history[-1].update(metrics, **{SELECTION_PREFIX + k: v for k, v in metrics_selection.items()})
    protocol = epochs.finish(len(result.history), metrics, metrics_selection)
    if protocol.pop("restored", False):  # an earlier epoch was best on the selection set
        ev = evaluate(model, evals, spec, device, EVAL_BATCH)
        metrics = with_primary(ev.metrics, spec, cfg.metric_policy)
        protocol["metrics_selection"] = selection()
    weights = save_weights(model, variant, tokenizer, results_dir, cfg)

    efficiency = {
        "trainable_params": trainable, "total_params": total, **mem, **energy,
        "train_time_s": result.seconds, "train_steps": result.steps, "train_samples": result.samples,
        "train_samples_per_s": result.samples / result.seconds,
        "train_tokens_per_s": result.tokens / result.seconds,
        "flops_measured": result.first_step_flops / result.first_step_tokens * result.padded_tokens,
        "flops_analytic": measure.analytic_flops(model, result.padded_tokens, full=variant is None),
        "flops_method": "FlopCounterMode on the first training micro-batch (forward+backward), per padded "
                        "token, times padded tokens trained; analytic: 6ND full, 4ND+6N_trainable*D adapters",
        "eval_samples_per_s": ev.samples_per_s, "eval_latency_ms_b32": ev.latency_ms, **setup.efficiency,
        **(setup.measured() if setup.measured else {}),
    }
    if cfg.param_budget is not None and variant is not None:
        from kdlora.param_budget import reference_count

        protocol["param_budget_ratio"] = trainable / reference_count(cfg, spec.num_labels)
    history = [{**h} for h in result.history]
    return {"metrics": metrics, "efficiency": efficiency, "teacher_run_id": setup.teacher_run_id,
            "history": history, "weights_fingerprint": weights, **protocol}


@dataclass
class Prepared:
    """What the strategy and the variant hand the one training loop."""

    setup: Setup
    model: torch.nn.Module  # on the device
    extra_params: list  # (name, parameter) of the strategy's extra modules (a projection)
    trainable: int  # exact counts: the model's and the extra modules'
    total: int
    after_step: Callable[[Any, int], None]
    lr_scale: Callable[[str, Any], float] | None

    def loop_hooks(self) -> dict[str, Any]:
        return {"loss_fn": self.setup.loss, "after_step": self.after_step, "extra_params": self.extra_params,
                "lr_scale": self.lr_scale}


def prepare(strategy, variant, ctx: RunContext) -> Prepared:
    """The strategy's model and loss on the device, its extra modules and online teacher, the
    exact parameter counts, and the variant's hooks (after-step, learning-rate groups)."""
    cfg, device = ctx.cfg, ctx.device
    setup = strategy.setup(ctx)
    model = setup.model.to(device)
    extra = {name: module.to(device) for name, module in setup.extra_modules.items()}  # e.g. a projection
    extra_params = [(f"{name}.{n}", p) for name, module in extra.items() for n, p in module.named_parameters()]
    if setup.teacher is not None:  # runs online inside the loss: eval mode, no gradients
        setup.teacher.to(device).eval().requires_grad_(False)
    trainable, total = count_params(model)
    trainable += sum(p.numel() for _, p in extra_params if p.requires_grad)
    total += sum(p.numel() for _, p in extra_params)
    after_step = variant.after_optimizer_step if variant else (lambda m, s: None)
    own = {id(p) for p in model.parameters()}  # the variant's groups are of the model's parameters only
    lr_scale = (lambda name, param: variant.lr_scale(name, param, cfg) if id(param) in own else 1.0) if variant else None
    return Prepared(setup, model, extra_params, trainable, total, after_step, lr_scale)


def save_weights(model, variant, tokenizer, results_dir: Path, cfg) -> str:
    """FFT runs keep the whole model (it may teach a KD run); adapter runs keep their adapters.
    Written to a temp dir and renamed, so a crash never leaves a half checkpoint. Returns the
    checkpoint's fingerprint, which the record keeps (a student checks its teacher against it)."""
    import shutil
    import tempfile

    from kdlora.checkpoints import checkpoint_dir, fingerprint
    from kdlora.records.store import honour_umask

    final = checkpoint_dir(results_dir, cfg.run_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{cfg.run_id}."))
    try:
        honour_umask(tmp, directory=True)  # mkdtemp's 0700 would lock the group out of a shared results dir
        if variant is None:
            model.save_pretrained(tmp, safe_serialization=True)
        else:
            variant.save(model, tmp)
        tokenizer.save_pretrained(tmp)
        for file in tmp.rglob("*"):  # some writers (safetensors) make 0600 temp files too
            honour_umask(file, directory=file.is_dir())
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return fingerprint(final)
