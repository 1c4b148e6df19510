"""Descriptive tables from the tidy table: counts, completion against a grid, normalised scores,
per-task GLUE results, student-as-%-of-teacher and collapsed runs.

Every function takes the completed-runs table (see table.completed) and returns a DataFrame whose
columns are what the CSV and the report show.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdlora.analysis import stats
from kdlora.analysis.methods import REFERENCE, TAUGHT_STRATEGIES
from kdlora.analysis.model import Settings
from kdlora.analysis.glue import chance_of_primary, constant_predictor_mask
from kdlora.analysis.tidy import KEY, METRICS, STRATEGY_ORDER, method_of
from kdlora.data.metrics import GLUE_TASKS

BLOCK = ["family", "task", "seed"]


# ----- ordering helpers ---------------------------------------------------------------------
def ordered(values, order=()) -> list:
    """Known names in their conventional order first, then the rest sorted."""
    values = first_seen(values)
    return [v for v in order if v in values] + sorted(v for v in values if v not in order)


def first_seen(values) -> list:
    """The distinct non-missing values in order of first appearance. A typed Series (e.g. arrow
    strings) is read as it is; anything else goes through a new Series, which infers a dtype."""
    if isinstance(values, pd.Series) and values.dtype != object:
        return list(values.dropna().unique())
    return list(pd.unique(pd.Series(list(values)).dropna()))


def task_order(tasks) -> list[str]:
    return ordered(tasks, GLUE_TASKS)


def method_order(methods) -> list[str]:
    """Methods (or arms) by strategy, variant, then each setting's value in numeric order."""
    def key(m: str):
        base, _, settings = m.partition(" ")
        strategy, _, variant = base.partition(":")
        levels = tuple(natural_key(v.partition("=")[2]) for v in settings.split())
        return (STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else 9, variant, levels)
    return sorted(first_seen(methods), key=key)


def natural_key(text: str) -> tuple:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


# ----- normalised scores ----------------------------------------------------------------------
def add_normalised(df: pd.DataFrame) -> pd.DataFrame:
    """Add chance, fft_ref and score_norm = (score - chance) / (FFT - chance).

    FFT is the FFT run of the same family, task and seed (the mean over that family and task's
    FFT seeds when that seed has none). FFT at or below chance cannot anchor a scale: nan.
    """
    out = df.copy()
    keys = list(zip(out["task"].tolist(), out["primary_name"].tolist()))
    chance = {key: chance_of_primary(*key) for key in set(keys)}  # once per (task, metric)
    out["chance"] = [chance[key] for key in keys]
    # custom tasks: 1/k for accuracy-like metrics (and macro-F1, 1/k for balanced classes)
    uniform = out["primary_name"].isin(UNIFORM_CHANCE) & (out["num_labels"] > 1)
    out["chance"] = out["chance"].fillna((1.0 / out["num_labels"]).where(uniform))
    fft = out[out["method"] == fft_reference(out)]
    by_seed = fft.groupby(BLOCK)["primary"].mean().rename("_fft_seed")
    by_cell = fft.groupby(["family", "task"])["primary"].mean().rename("_fft_cell")
    out = out.join(by_seed, on=BLOCK).join(by_cell, on=["family", "task"])
    out["fft_ref"] = out["_fft_seed"].fillna(out["_fft_cell"])
    denom = out["fft_ref"] - out["chance"]
    out["score_norm"] = ((out["primary"] - out["chance"]) / denom).where(denom > 0)
    return out.drop(columns=["_fft_seed", "_fft_cell"])


UNIFORM_CHANCE = ("accuracy", "matched_accuracy", "mismatched_accuracy", "macro_f1")


def fft_reference(df: pd.DataFrame) -> str | None:
    """The FFT arm that anchors normalised scores: the only one, or the one with the most runs."""
    sizes = df.loc[df["strategy"] == REFERENCE, "method"].value_counts()
    if sizes.empty:
        return None
    best = sizes[sizes == sizes.max()].index
    return method_order(best)[0]


# ----- counts -------------------------------------------------------------------------------------
def counts(df: pd.DataFrame) -> pd.DataFrame:
    """Runs by every dimension, long: dimension, level, runs."""
    parts = [pd.DataFrame([{"dimension": "total", "level": "all", "runs": len(df)}])]
    orders = {"strategy": STRATEGY_ORDER, "family": (), "task": GLUE_TASKS, "seed": (), "method": ()}
    for dim, order in orders.items():
        sizes = df.groupby(dim).size()
        levels = method_order(sizes.index) if dim == "method" else ordered(sizes.index, order)
        parts.append(pd.DataFrame({"dimension": dim, "level": [str(v) for v in levels],
                                   "runs": [int(sizes[v]) for v in levels]}))
    return pd.concat(parts, ignore_index=True)


def strategy_task_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Runs per strategy x task (zeros included), the table that settles 'no runs on task X'."""
    table = df.groupby(["strategy", "task"]).size().unstack(fill_value=0)
    table = table.reindex(index=ordered(table.index, STRATEGY_ORDER), columns=task_order(table.columns),
                          fill_value=0)
    return table.rename_axis(index="strategy", columns=None).reset_index()


def cells(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (family, method, task): runs and distinct seeds."""
    g = df.groupby(["family", "strategy", "variant", "method", "task"], dropna=False)
    out = g.agg(runs=("run_id", "size"), seeds=("seed", "nunique")).reset_index()
    return out.sort_values(["family", "method", "task"]).reset_index(drop=True)


# ----- completion against a grid --------------------------------------------------------------
def expected_keys(configs) -> pd.DataFrame:
    """The grid's runs as rows: run_id and key (family, task, strategy, variant, seed)."""
    rows = [{"run_id": c.run_id, "family": c.family, "task": c.task_name, "strategy": c.strategy,
             "variant": c.variant, "seed": c.seed} for c in configs]
    return pd.DataFrame(rows, columns=["run_id", *KEY]).drop_duplicates("run_id").reset_index(drop=True)


def _keyed(frame: pd.DataFrame) -> pd.Series:
    """One string per row for the key; a missing variant (FFT) is spelt 'None' on both sides."""
    cols = [["None" if v is None or v != v else str(v) for v in frame[k].tolist()] for k in KEY]
    return pd.Series(["|".join(row) for row in zip(*cols)], index=frame.index, dtype=object)


def completion(df: pd.DataFrame, expected: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary by scope, per-cell table) of the grid's runs that completed.

    A grid run is done when a completed run has its run_id, or, if no other grid run shares its
    key (family, task, strategy, variant, seed), when a completed run has that key: runs made
    elsewhere (other defaults, the legacy study) still count, and hyperparameter axes that give
    one key several runs are told apart by run_id. Completed runs matching no grid run are
    counted as outside the grid.
    """
    exp = expected.assign(seed=expected["seed"].astype(int), method=[
        method_of(s, v) for s, v in zip(expected["strategy"], expected["variant"])])
    exp["key"] = _keyed(exp)
    done_keys = _keyed(df.assign(seed=df["seed"].astype(int)))
    unique_key = ~exp["key"].duplicated(keep=False)
    exp["done"] = _among(exp["run_id"], df["run_id"]) | (unique_key & _among(exp["key"], done_keys))
    matched = _among(df["run_id"], exp["run_id"]) | _among(done_keys, exp.loc[unique_key, "key"])
    rows = [_completion_row("overall", "all", exp)]
    for scope in ("strategy", "family", "task"):
        for level, part in exp.groupby(scope, sort=False):
            rows.append(_completion_row(scope, level, part))
    summary = pd.DataFrame(rows)
    summary["outside_grid"] = np.where(summary["scope"] == "overall", int((~matched).sum()), np.nan)
    per_cell = exp.groupby(["family", "method", "task"]).agg(
        expected=("done", "size"), done=("done", "sum")).reset_index()
    per_cell["completion_pct"] = 100 * per_cell["done"] / per_cell["expected"]
    return summary, per_cell


def _among(values: pd.Series, pool: pd.Series) -> pd.Series:
    """values.isin(pool) for string ids, by set lookups: pandas' isin on arrow strings makes a
    pyarrow scalar of every pool value (~70 ms for 10,000 run ids)."""
    members = set(pool.tolist())
    return pd.Series([v in members for v in values.tolist()], index=values.index, dtype=bool)


def _completion_row(scope: str, level: str, part: pd.DataFrame) -> dict:
    done, expected = int(part["done"].sum()), len(part)
    return {"scope": scope, "level": level, "expected": expected, "done": done,
            "missing": expected - done, "completion_pct": 100 * done / expected if expected else np.nan}


# ----- per-task results (the paper's Table 1) ---------------------------------------------------
def per_task(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of the primary metric per family x method x task."""
    g = df.groupby(["family", "strategy", "variant", "method", "task", "primary_name"], dropna=False)
    out = g["primary"].agg(n_seeds="count", mean="mean", std="std").reset_index()
    out["mean_x100"], out["std_x100"] = out["mean"] * 100, out["std"] * 100
    return _sort_cells(out)


EXCLUDED_FROM_AVERAGE = {"no-wnli": ("wnli",), "all": ()}


def glue_average(per_task_table: pd.DataFrame, convention: str = "no-wnli") -> pd.DataFrame:
    """Mean over tasks of the per-task means. By default WNLI is left out of the average, as the
    BERT and RoBERTa papers did (its column stays in the per-task table); `convention="all"`
    keeps it. `complete` says whether every GLUE task the convention averages is in."""
    keys = ["family", "strategy", "variant", "method"]
    excluded = EXCLUDED_FROM_AVERAGE[convention]
    used = per_task_table[~per_task_table["task"].isin(excluded)]
    groups = per_task_table.groupby(keys, dropna=False).size().index
    out = used.groupby(keys, dropna=False).agg(n_tasks=("task", "nunique"), average=("mean", "mean"))
    out = out.reindex(groups).reset_index()
    out["n_tasks"] = out["n_tasks"].fillna(0).astype(int)
    tasks = used.groupby(["family", "method"])["task"].agg(set)
    wanted = set(GLUE_TASKS) - set(excluded)
    out["complete"] = [wanted <= tasks.get((f, m), set()) for f, m in zip(out["family"], out["method"])]
    out["average_x100"] = out["average"] * 100
    out["convention"] = convention
    return _sort_cells(out)


def _sort_cells(out: pd.DataFrame) -> pd.DataFrame:
    rank = {m: i for i, m in enumerate(method_order(out["method"]))}
    trank = {t: i for i, t in enumerate(task_order(out["task"]))} if "task" in out else {}
    out = out.assign(_m=out["method"].map(rank), _t=out["task"].map(trank) if trank else 0)
    return out.sort_values(["family", "_m", "_t"]).drop(columns=["_m", "_t"]).reset_index(drop=True)


# ----- teacher -> student -------------------------------------------------------------------------
def teacher_student(df: pd.DataFrame) -> pd.DataFrame:
    """Each KD-LoRA run beside the FFT run that taught it (linked by teacher_run_id)."""
    kd = df[df["strategy"].isin(TAUGHT_STRATEGIES) & df["teacher_run_id"].notna()]
    teachers = df[~df["strategy"].isin(TAUGHT_STRATEGIES)].set_index("run_id")
    kd = kd[kd["teacher_run_id"].isin(teachers.index)]
    cols = ["primary", "trainable_params", "eval_samples_per_s", "eval_latency_ms_b32", "train_time_s"]
    t = teachers.loc[kd["teacher_run_id"], cols].set_axis(kd.index)
    out = kd[["run_id", "teacher_run_id", "family", "task", "seed", "variant", "primary_name"]].copy()
    out["variant"] = [m.partition(":")[2] for m in kd["method"]]  # the arm: variant and varied settings
    out["student_primary"], out["teacher_primary"] = kd["primary"], t["primary"]
    out["pct_of_teacher"] = 100 * kd["primary"] / t["primary"].where(t["primary"] != 0)
    out["inference_speedup"] = kd["eval_samples_per_s"] / t["eval_samples_per_s"]
    out["latency_ratio"] = kd["eval_latency_ms_b32"] / t["eval_latency_ms_b32"]
    out["trainable_params_ratio"] = kd["trainable_params"] / t["trainable_params"]
    return out.reset_index(drop=True)


def teacher_student_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Mean student-as-%-of-teacher per family x variant, with the inference speed-up."""
    if pairs.empty:
        return pd.DataFrame(columns=["family", "variant", "runs", "pct_of_teacher_mean",
                                     "pct_of_teacher_min", "inference_speedup_mean"])
    g = pairs.groupby(["family", "variant"])
    return g.agg(runs=("run_id", "size"), pct_of_teacher_mean=("pct_of_teacher", "mean"),
                 pct_of_teacher_min=("pct_of_teacher", "min"),
                 inference_speedup_mean=("inference_speedup", "mean")).reset_index()


# ----- collapsed runs -------------------------------------------------------------------------------
def collapsed_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Runs whose metrics are exactly those of a constant predictor (see glue.constant_predictor)."""
    rows = []
    long = df.melt(id_vars=["run_id", "family", "task", "seed", "method"], value_vars=list(METRICS),
                   var_name="metric", value_name="value").dropna(subset=["value"])
    hits = np.zeros(len(long), dtype=bool)
    values = long["value"].to_numpy(dtype=float)
    for (task, metric), at in long.groupby(["task", "metric"], sort=False, dropna=False).indices.items():
        hits[at] = constant_predictor_mask(task, metric, values[at])  # one test per task and metric
    hit = {c: long[c].to_numpy()[hits] for c in long.columns}  # plain arrays: a row per collapsed run
    where: dict = {}
    for k, run_id in enumerate(hit["run_id"]):  # each run's metric rows, runs in order of appearance
        where.setdefault(run_id, []).append(k)
    for run_id, at in where.items():
        first = at[0]
        rows.append({"run_id": run_id, "family": hit["family"][first], "task": hit["task"][first],
                     "seed": hit["seed"][first], "method": hit["method"][first],
                     "evidence": "; ".join(f"{hit['metric'][k]}={hit['value'][k]:.4f}" for k in at)})
    cols = ["run_id", "family", "task", "seed", "method", "evidence"]
    return pd.DataFrame(rows, columns=cols).sort_values(["task", "method", "family"]).reset_index(drop=True)


# ----- aggregate scores ---------------------------------------------------------------------------
def scores(df: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Mean primary (pooled, the reference's way) and mean FFT-normalised score with a
    task-stratified bootstrap CI, for all runs, each strategy and each method."""
    df = df[["strategy", "method", "task", "primary", "score_norm"]]  # subsets copy only these
    groups = [("all", "all", df)]
    groups += [("strategy", s, df[df["strategy"] == s]) for s in ordered(df["strategy"], STRATEGY_ORDER)]
    groups += [("method", m, df[df["method"] == m]) for m in method_order(df["method"])]
    return pd.DataFrame([_score_row(level, name, part, settings) for level, name, part in groups])


def _score_row(level: str, name: str, part: pd.DataFrame, s: Settings) -> dict:
    strategy, _, variant = name.partition(":") if level != "all" else ("", "", "")
    norm = part[part["score_norm"].notna()]  # (a mask: dropna(subset=) costs ~2 ms a call)
    if len(norm) == len(part):  # the same runs and strata: one set of resamples serves both
        (p_lo, p_hi), (n_lo, n_hi) = stats.bootstrap_mean_cis(
            [part["primary"].to_numpy(), norm["score_norm"].to_numpy()], part["task"], s.n_boot, s.confidence, s.seed)
    else:
        p_lo, p_hi = stats.bootstrap_mean_ci(part["primary"].to_numpy(), part["task"], s.n_boot, s.confidence, s.seed)
        n_lo, n_hi = stats.bootstrap_mean_ci(norm["score_norm"].to_numpy(), norm["task"], s.n_boot, s.confidence,
                                             s.seed)
    return {"level": level, "name": name, "strategy": strategy or None, "variant": variant or None,
            "runs": len(part), "performance_mean": part["primary"].mean(), "performance_std": part["primary"].std(),
            "performance_ci_low": p_lo, "performance_ci_high": p_hi, "n_norm": len(norm),
            "score_norm_mean": norm["score_norm"].mean() if len(norm) else np.nan,
            "score_norm_ci_low": n_lo, "score_norm_ci_high": n_hi}
