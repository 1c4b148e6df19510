"""The report's Protocol section (with `kdlora report --select`): what was searched, the budget
each method got, the value chosen per (method, family, task) and the choices on the edge of their
search range. Rendered only from the protocol, selection and candidates tables."""

from __future__ import annotations

from kdlora.analysis.methods import REFERENCE, TAUGHT_STRATEGIES
from kdlora.analysis.model import Analysis
from kdlora.analysis.selection import BIAS_WARNING, SCORES, edge_warnings
from kdlora.analysis.tidy import method_label, method_of


def bias_lines(a: Analysis) -> list[str]:
    """The report's first lines when settings were selected on the reported split."""
    return [BIAS_WARNING, ""] if a.settings.select == "reported" else []


def _method(strategy: str, variant) -> str:
    return method_label(method_of(strategy, variant))


def _value(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    return f"{v:g}" if isinstance(v, float) else str(v)


def protocol_section(a: Analysis) -> str:
    if a.settings.select is None:
        return ""
    protocol, selection = a["protocol"], a["selection"]
    score = SCORES[a.settings.select]
    split = "the selection split (never trained on, never reported)" if a.settings.select == "selection" \
        else "the reported split (optimistically biased)"
    out = ["## Protocol", "",
           f"Per (method, family, task) the searched setting with the best mean `{score}` over seeds, on {split}, "
           f"was kept with all its seeds; only these arms are analysed (`runs.csv`). The other "
           f"{len(a['candidates'])} candidate runs are in `candidates.csv`; the choices in `selection.csv`.", "",
           "| method | searched | candidates per cell | runs | optimizer steps |", "|---|---|---|---|---|"]
    for r in protocol.to_dict("records"):
        steps = "n/a" if r["train_steps"] != r["train_steps"] else f"{r['train_steps']:,.0f}"
        out.append(f"| {_method(r['strategy'], r['variant'])} | {r['searched']} | {r['candidates_per_cell']:g} | "
                   f"{r['runs']} | {steps} |")
    settings = [c for c in selection.columns if f"{c}_edge" in selection.columns]
    if len(selection):
        out += ["", "Chosen values:", "", "| method | family | task | " + " | ".join(settings) + f" | mean {score} |",
                "|---|---|---|" + "---|" * (len(settings) + 1)]
        for r in selection.to_dict("records"):
            cells = " | ".join(_value(r[s]) for s in settings)
            out.append(f"| {_method(r['strategy'], r['variant'])} | {r['family']} | {r['task']} | {cells} | "
                       f"{r[f'{score}_mean']:.4f} |")
    fft_searched = any(r["strategy"] == REFERENCE and r["searched"] != "not searched" for r in protocol.to_dict("records"))
    runs = a["runs"]
    students = runs.loc[runs["strategy"].isin(TAUGHT_STRATEGIES), "teacher_run_id"]
    if fft_searched and len(students):
        own = students.isin(set(runs.loc[runs["strategy"] == REFERENCE, "run_id"])).all()
        out += ["", "KD-LoRA students distil from the FFT candidate chosen the same way, so the FFT arm analysed is "
                "their teacher." if own else "Some analysed KD-LoRA students distil from an FFT candidate other than the "
                "one selected (e.g. `teachers: every`): their teacher is in `candidates.csv`."]
    warnings = edge_warnings(selection)
    if warnings:
        out += ["", "**On the edge of the search range** (widen the search there):", ""] + [f"- {w}" for w in warnings]
    return "\n".join(out) + "\n"
