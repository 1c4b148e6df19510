"""KD-LoRA + hidden states: KD-LoRA's loss plus the mean squared error between the student's
layer-i hidden states and its mapped teacher layer's, the intermediate-layer distillation the
reference report's "future work" asks for (as TinyBERT / DistilBERT-style training do).

L = KD-LoRA's loss (alpha · T² · KL + (1 − alpha) · CE; MSE for regression)
    + kd_hidden_weight · mean over mapped layers of MSE(P·h_s[i], h_t[map(i)]) on non-padding tokens

The layer map is uniform: student layer i (1..n_s) takes teacher layer round(i · n_t / n_s), so 3
student layers learn from teacher layers 2, 4, 6 of 6, and DistilBERT's 6 from BERT's 2, 4, ..., 12.
P is a learned linear projection (trained with the adapters, counted as trainable) when the
widths differ, and absent when they match (every family's default student has the teacher's
width). Hidden states cannot be cached per example as logits are (they are per token, and far
larger), so the teacher runs online, in this process: eval mode, no gradients, in the same
autocast as the student. Its time and FLOPs are measured and recorded apart (teacher_online_*).
"""

from __future__ import annotations

import time

from kdlora.errors import UserError
from kdlora.models import load_classifier, load_tokenizer, model_names, student_layers
from kdlora.seeding import seed_everything
from kdlora.strategies.base import RunContext, Setup, register
from kdlora.strategies.kd_lora import KdLora, distillation_loss, find_teacher
from kdlora.strategies.lora import with_adapters


def uniform_layer_map(n_student: int, n_teacher: int) -> list[int]:
    """Teacher layer (1-based, as in HF hidden_states) for each student layer 1..n_student."""
    return [max(1, round(i * n_teacher / n_student)) for i in range(1, n_student + 1)]


def hidden_mse(student_h, teacher_h, mask):
    """Mean over non-padding tokens of the per-token mean squared error."""
    per_token = (student_h.float() - teacher_h.float()).pow(2).mean(-1)
    m = mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum().clamp(min=1)


def always_hidden_states(model) -> None:
    """Make the student's outputs carry its hidden states. PEFT's wrappers pass
    output_hidden_states=None explicitly, and AdaLoRA calls model.forward directly (no hooks run),
    so the model's own forward is wrapped (its signature kept: the loop reads it)."""
    import functools

    forward = model.forward

    @functools.wraps(forward)
    def with_hidden_states(*args, **kwargs):
        kwargs["output_hidden_states"] = True
        return forward(*args, **kwargs)

    model.forward = with_hidden_states


def _num_layers(config) -> int:
    return getattr(config, "num_hidden_layers", None) or config.n_layers  # DistilBERT: n_layers


def _width(config) -> int:
    return getattr(config, "hidden_size", None) or config.dim  # DistilBERT: dim


class OnlineTeacher:
    """The teacher's forward inside the student's step, timed apart (CUDA events on the GPU, so the
    step does not wait; read once, after training)."""

    def __init__(self, model, device) -> None:
        from kdlora.models import matmul_params
        from kdlora.train.loop import model_inputs

        self.model, self.device, self._inputs = model, device, model_inputs
        self.matmul_params = matmul_params(model)
        self.params = sum(p.numel() for p in model.parameters())
        self.calls, self.tokens, self.seconds = 0, 0, 0.0
        self._events: list = []

    def __call__(self, batch):
        import torch

        cuda = self.device.type == "cuda"
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            t0 = time.perf_counter()
        with torch.no_grad():
            out = self.model(**self._inputs(self.model, {k: v for k, v in batch.items() if k != "labels"}),
                             output_hidden_states=True)
        if cuda:
            end.record()
            self._events.append((start, end))
        else:
            self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.tokens += batch["attention_mask"].numel()  # padded tokens: what the forward computes on
        return out

    def measured(self) -> dict:
        if self._events:
            import torch

            torch.cuda.synchronize(self.device)
            self.seconds += sum(s.elapsed_time(e) for s, e in self._events) / 1000
            self._events.clear()
        return {"teacher_online": True, "teacher_online_s": self.seconds, "teacher_online_forwards": self.calls,
                "teacher_online_flops_analytic": 2.0 * self.matmul_params * self.tokens,
                "teacher_total_params": self.params}


@register
class KdLoraHidden(KdLora):
    name = "kd-lora-hidden"
    label = "KD-LoRA + hidden"
    short_label = "KD-LoRA+h"
    order = 3
    color, colormap = "#009E73", "Greens"
    in_default_grid = False  # listed explicitly in a grid (the defaults stay the reference design)
    fields = {**KdLora.fields,
              "kd_hidden_weight": (float, 1.0, "weight of the hidden-state MSE term", (0, True, None, False))}

    def setup(self, ctx: RunContext) -> Setup:
        import torch

        cfg = ctx.cfg
        record, ckpt = find_teacher(cfg, ctx.results_dir)
        teacher = load_classifier(str(ckpt), ctx.spec.num_labels)
        _, student_name = model_names(cfg.family, cfg.teacher_model, cfg.student_model)
        if load_tokenizer(str(ckpt)).get_vocab() != load_tokenizer(student_name).get_vocab():
            raise UserError(f"{self.name} runs the teacher on the student's batches, so both need one tokenizer; "
                            f"the teacher {ckpt} and the student {student_name} have different vocabularies")
        seed_everything(cfg.seed)  # the student starts as it would without the teacher loaded
        model = load_classifier(student_name, ctx.spec.num_labels, layers=student_layers(cfg.family, cfg.student_model))
        s_cfg, t_cfg = model.config, teacher.config
        layer_map = uniform_layer_map(_num_layers(s_cfg), _num_layers(t_cfg))
        extra = {}
        if _width(s_cfg) != _width(t_cfg):  # learned, trained with the adapters
            extra["hidden_projection"] = torch.nn.Linear(_width(s_cfg), _width(t_cfg))
        project = extra.get("hidden_projection", torch.nn.Identity())
        always_hidden_states(model)
        model = with_adapters(model, ctx)
        online = OnlineTeacher(teacher, ctx.device)

        def loss(batch, outputs):
            t_out = online(batch)
            kd = distillation_loss(outputs.logits, t_out.logits, outputs.loss, temperature=cfg.kd_temperature,
                                   alpha=cfg.kd_alpha, regression=ctx.spec.is_regression)
            mask = batch["attention_mask"]
            hidden = sum(hidden_mse(project(outputs.hidden_states[i]), t_out.hidden_states[j], mask)
                         for i, j in enumerate(layer_map, start=1)) / len(layer_map)
            return kd + cfg.kd_hidden_weight * hidden

        eff = {"teacher_run_id": record.run_id, "kd_hidden_layer_map": layer_map,
               "kd_hidden_projection_params": sum(p.numel() for m in extra.values() for p in m.parameters())}
        return Setup(model=model, loss=loss, efficiency=eff, teacher_run_id=record.run_id, extra_modules=extra,
                     teacher=teacher, measured=online.measured)
