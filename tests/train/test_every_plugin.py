"""Every registered (strategy, variant) pair trains on tiny models of every architecture, through
the engine's own set-up (engine.prepare) and the one training loop: the loss falls, and the
recorded trainable count is exact (the variant's per-layer formula on the adapted linear layers,
plus the head trained in full, plus a strategy's extra modules).

The matrix comes from the registries: a new variant or strategy is tested here without a line
added. Kept fast: 2-layer models of width 32, 48 training examples, a few optimizer steps, no
evaluation or saving (tests/train/test_engine.py and tests/cli cover a whole run_one).
"""

from __future__ import annotations

import pytest
import torch

from kdlora.config import build_config
from kdlora.data.tasks import resolve_task
from kdlora.data.tokenize import make_dataloader
from kdlora.models import head_modules, load_classifier, load_tokenizer, target_modules
from kdlora.runner import run_one
from kdlora.seeding import seed_everything
from kdlora.strategies import STRATEGIES, RunContext, ordered_strategies, teacher_of
from kdlora.testing.synthetic_data import FIXTURE_WORDS, write_glue_fixture
from kdlora.train import engine
from kdlora.train.loop import optimizer_steps, train_loop
from kdlora.variants import VARIANTS

# family -> (teacher architecture, student architecture) among the tiny checkpoints
FAMILIES = {"bert": ("bert", "distilbert"), "roberta": ("roberta", "roberta"),
            "deberta": ("deberta-v2", "deberta-v2"), "minilm": ("bert", "bert")}
PAIRS = [(s.name, v) for s in ordered_strategies() for v in (VARIANTS if s.uses_adapters else [None])]
LR = 2e-2
EPOCHS = 4


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    return write_glue_fixture(tmp_path_factory.mktemp("glue"), tasks=("sst2",), n_train=48, n_eval=16)


@pytest.fixture(scope="module")
def wide_student(tmp_path_factory):
    """A DistilBERT student wider than the teacher (48 vs 32): the hidden-state projection is learned."""
    from kdlora.testing.tiny import build_tiny_model

    return build_tiny_model("distilbert", tmp_path_factory.mktemp("wide") / "distilbert", FIXTURE_WORDS, hidden=48)


def config(family, strategy, variant, dirs, glue_dir, student=None):
    teacher_arch, student_arch = FAMILIES[family]
    return build_config(dict(
        family=family, task="sst2", strategy=strategy, variant=variant, seed=3, data_dir=str(glue_dir),
        teacher_model=str(dirs[teacher_arch]), student_model=str(student or dirs[student_arch]), epochs=EPOCHS,
        batch_size=16, lr=LR, teacher_lr=1e-2, teacher_epochs=4, adalora_tinit=0.2, adalora_tfinal=0.2,
        adalora_delta_t=1))


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_model_dirs, glue_dir):
    """The FFT teacher of every family, trained once (the strategies with a teacher need it)."""
    out = tmp_path_factory.mktemp("results")
    for family in FAMILIES:
        taught = next(s.name for s in ordered_strategies() if s.teacher_strategy)
        rec = run_one(teacher_of(config(family, taught, "lora", tiny_model_dirs, glue_dir)), out)
        assert rec.status == "completed", rec.error
    return out


def expected_trainable(cfg, prepared) -> int | None:
    """What the record's trainable count must be: computed from shapes, not from the trained model."""
    from kdlora.models import model_names, student_layers

    teacher, student = model_names(cfg.family, cfg.teacher_model, cfg.student_model)
    strategy = STRATEGIES.get(cfg.strategy)
    fresh = load_classifier(student if strategy.trains_student else teacher, 2,
                            layers=student_layers(cfg.family, cfg.student_model) if strategy.trains_student else None)
    if not strategy.uses_adapters:
        return sum(p.numel() for p in fresh.parameters())
    variant = VARIANTS.get(cfg.variant)
    suffixes = target_modules(fresh, cfg.target_modules)
    layers = [m for name, m in fresh.named_modules()
              if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in suffixes]
    per_layer = [variant.layer_params(m.in_features, m.out_features, cfg) for m in layers]
    if None in per_layer:
        return None
    head = sum(p.numel() for name in head_modules(fresh) for p in fresh.get_submodule(name).parameters())
    extra = sum(p.numel() for _, p in prepared.extra_params)
    return sum(per_layer) + head + extra


def train_pair(cfg, results, student=None):
    spec = resolve_task(cfg.task)
    strategy = STRATEGIES.get(cfg.strategy)
    variant = VARIANTS.get(cfg.variant) if cfg.variant else None
    tokenizer = load_tokenizer(cfg.student_model if strategy.trains_student else cfg.teacher_model)
    splits, tokenized = engine.load_data(cfg, spec, tokenizer)
    loader = make_dataloader(tokenized["train"], tokenizer, cfg.micro_batch_size, shuffle=True, seed=cfg.seed)
    total_steps = optimizer_steps(len(loader), cfg.grad_accum, cfg.epochs)
    seed_everything(cfg.seed)
    ctx = RunContext(cfg=cfg, spec=spec, results_dir=results, splits=splits, train_data=tokenized["train"],
                     total_steps=total_steps, device=torch.device("cpu"))
    prepared = engine.prepare(strategy, variant, ctx)
    fixed = make_dataloader(tokenized["train"], tokenizer, 16, shuffle=False, seed=0)
    before = training_loss(prepared, fixed)
    result = train_loop(prepared.model, loader, cfg=cfg, device=torch.device("cpu"), total_steps=total_steps,
                        count_flops=False, **prepared.loop_hooks())
    result.losses = [before, training_loss(prepared, fixed)]  # the strategy's loss on the training set
    return prepared, result


def training_loss(prepared, loader) -> float:
    """The strategy's own loss (distillation terms included) over the training set, without dropout:
    epoch means of a few shuffled batches are too noisy to show that a tiny model learns."""
    from kdlora.train.loop import model_inputs

    model = prepared.model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            outputs = model(**model_inputs(model, batch))
            total += float(prepared.setup.loss(batch, outputs)) * len(batch["labels"])
            n += len(batch["labels"])
    return total / n


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("strategy, variant", PAIRS, ids=[f"{s}-{v or 'full'}" for s, v in PAIRS])
def test_every_pair_learns_with_an_exact_parameter_count(family, strategy, variant, tiny_model_dirs, glue_dir,
                                                         results):
    cfg = config(family, strategy, variant, tiny_model_dirs, glue_dir)
    prepared, result = train_pair(cfg, results)
    assert result.losses[-1] < result.losses[0], result.losses
    expected = expected_trainable(cfg, prepared)
    assert expected is None or prepared.trainable == expected
    if prepared.setup.measured is not None:  # an online teacher: its cost is measured apart
        cost = prepared.setup.measured()
        assert cost["teacher_online_forwards"] >= result.steps  # one forward per micro-batch
        assert cost["teacher_online_s"] > 0 and cost["teacher_online_flops_analytic"] > 0


def test_every_variant_states_its_parameter_formula():
    cfg = build_config(dict(family="bert", task="sst2", strategy="lora"))
    for name in VARIANTS:
        variant = VARIANTS.get(name)
        assert variant.layer_params(32, 32, build_config({**cfg.model_dump(), "variant": name})) is not None, name


def test_hidden_states_through_a_learned_projection_when_widths_differ(tiny_model_dirs, glue_dir, results,
                                                                       wide_student):
    hidden = [s.name for s in ordered_strategies() if s.teacher_strategy and "kd_hidden_weight" in s.fields]
    for strategy in hidden:
        cfg = config("bert", strategy, "lora", tiny_model_dirs, glue_dir, student=wide_student)
        prepared, result = train_pair(cfg, results)
        assert [n for n, _ in prepared.extra_params] == ["hidden_projection.weight", "hidden_projection.bias"]
        assert sum(p.numel() for _, p in prepared.extra_params) == 48 * 32 + 32
        assert prepared.trainable == expected_trainable(cfg, prepared)
        assert result.losses[-1] < result.losses[0], result.losses
        assert prepared.setup.efficiency["kd_hidden_layer_map"] == [1, 2]  # 2 student layers <- 2 teacher layers
