"""The report: report.json for machines, report.md and PNG charts for people. No model code here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftpipe import faults
from ftpipe.files import write_json_atomic, write_text_atomic


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _signed(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:+.{digits}f}"


def summary_table(report: dict, labels: tuple[str, str] = ("base", "tuned")) -> str:
    """The summary table in Markdown: task, role, kind, metric, both scores, delta with CI, verdict.

    For QLoRA runs `base` is the base quantized as in training, and the table adds the
    full-precision base beside it: the difference is the cost of quantization, not forgetting.
    """
    a, b = labels
    few = report.get("few_shot_k")
    quantized = report.get("quantized_base")
    head = f"| task | role | metric | n |" + (f" {a} (full precision) |" if quantized else "") + f" {a} |" + \
        (f" {few}-shot {a} |" if few else "") + \
        f" {b} | delta [{int(report['confidence'] * 100)}% CI] | forgetting | McNemar p | verdict |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for t in report["tasks"]:
        digits = 2 if t["kind"] == "perplexity" else 3
        ci = f"{_signed(t['delta'], digits)} [{_signed(t['ci_low'], digits)}, {_signed(t['ci_high'], digits)}]"
        forgetting = f"{t['forgetting']:+.1%}" if t.get("forgetting") is not None else ""
        p = _fmt(t["mcnemar"]["p_value"], 4) if "mcnemar" in t else ""
        row = f"| {t['task']} | {t['role']} | {t['metric']} | {t['n']} |"
        if quantized:
            row += f" {_fmt(t.get('base_full_precision'), digits)} |"
        row += f" {_fmt(t[a], digits)} |"
        if few:
            row += f" {_fmt(t.get('few_shot'), digits)} |"
        row += f" {_fmt(t[b], digits)} | {ci} | {forgetting} | {p} | **{t['verdict']}** |"
        lines.append(row)
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    """report.md: summary, table, charts, fit diagnostics, data facts and flipped items."""
    s = report["summary"]
    out = [f"# ftpipe report: {report['pipeline']} / {report['run_id']}", ""]
    out.append(f"Base model `{report['base_model']}`, adapter `{report['adapter']}`, method `{report['method']}`; "
               f"greedy decoding, max {report['generation']['max_new_tokens']} new tokens for both models.")
    out.append("")
    max_f = s.get("max_forgetting")
    out.append(f"**Learned** {s['learned']} of {s['target_tasks']} target tasks significantly; "
               f"**forgot** on {s['forgot']} of {s['held_out_tasks']} held-out tasks"
               + (f" (largest relative drop {max_f:+.1%})." if max_f is not None else "."))
    out += _toolbox_lines(report)
    out += ["", summary_table(report), ""]
    out.append("Deltas are tuned minus base on the same items; the CI is a paired bootstrap over items of that same "
               "number (perplexity: exp of the token-weighted mean NLL). "
               "Forgetting is the relative loss on held-out tasks (positive = forgot; for perplexity a rise). "
               "McNemar's exact test counts items that flipped between right and wrong.")
    out += _baseline_lines(report)
    if report.get("quantized_base"):
        out.append("")
        out.append("QLoRA: `base` is the base model quantized exactly as in training, which is what the tuned adapter "
                   "runs on; forgetting is measured against it. `base (full precision)` is the unquantized base: the "
                   "difference between the two is the cost of quantization, shown separately and never counted as forgetting.")
    sandbox = report.get("sandbox")
    if sandbox:
        out += ["", "Generated code ran in the sandbox with: " + ", ".join(sandbox["layers"]) + ". "
                + ("Reads were confined (Landlock)." if sandbox["reads_guarded"] else
                   "**Reads were not confined**: this kernel has no Landlock, so generated code could read any "
                   "file the evaluator can.")]
    gates = report.get("gates") or {}
    if gates.get("promotion"):
        out += ["", f"**Promotion:** {gates['promotion']}"]
    comparable = report.get("comparability") or {}
    if comparable.get("overlap"):
        out += ["", f"**Not comparable with the promoted run {comparable['promoted']}:** {comparable['detail']}"]
    out += ["", "![learning and forgetting](learning_forgetting.png)", "", "![per task](tasks.png)", ""]
    if report.get("loss_curves") or report.get("step_losses"):
        out += ["## Training", "", "![loss curves](loss.png)", ""]
        steps = report.get("step_losses") or []
        if steps:
            out.append(f"- training loss per step: {steps[0]['loss']:.3f} at step {steps[0]['step']} -> "
                       f"{steps[-1]['loss']:.3f} at step {steps[-1]['step']} ({len(steps)} steps)")
        for split, losses in report["loss_curves"].items():
            out.append(f"- {split} loss per checkpoint: " + ", ".join(f"{x:.3f}" for x in losses))
        out.append("")
    flags = report.get("fit_flags") or []
    out += ["## Fit diagnostics", ""] + ([f"- {f}" for f in flags] or ["- no sign of over- or underfitting"]) + [""]
    if report.get("gates"):
        out += ["## Quality gates", ""]
        for g in report["gates"]["results"]:
            out.append(f"- {'PASS' if g['passed'] else 'FAIL'} {g['gate']}: {g['detail']}")
        out.append("")
    leak = report.get("leakage") or {}
    if leak:
        out += ["## Data", "", f"- leakage check ({leak.get('ngram')}-gram, threshold {leak.get('threshold')}): "
                f"{leak.get('leaked', 0)} leaked items" + (f", dropped from evaluation" if leak.get("leaked") and leak.get("action") == "drop" else "")]
        for task, m in (report.get("mixture") or {}).items():
            out.append(f"- training mixture {task}: {m['rows']} rows ({m['row_share']:.0%}), {m['tokens']} tokens ({m['token_share']:.0%})")
        out.append("")
    out += diagnosis_markdown(report)
    flipped = [(t["task"], f) for t in report["tasks"] for f in t.get("flipped", [])]
    if flipped:
        out += ["## Items that flipped from right to wrong", ""]
        for task, f in flipped[:12]:
            out.append(f"- **{task}** `{f['input'][:120]!r}` expected `{f['reference']}`: "
                       f"base `{f.get('base', '')[:80]!r}` -> tuned `{f.get('tuned', '')[:80]!r}`")
        out.append("")
    return "\n".join(out)


def diagnosis_markdown(report: dict) -> list[str]:
    """The forgetting diagnosis section: per forgotten held-out task, the verdict and its evidence with CIs."""
    diagnosed = [t["diagnosis"] for t in report["tasks"] if t.get("diagnosis")]
    if not diagnosed:
        return []
    out = ["## Forgetting diagnosis: knowledge lost, or format drifted?", "",
           "For each held-out task that dropped: the reference answer's likelihood under base and tuned (and its rank "
           "among the task's other answers, which share its format), and a recovery probe that asks the tuned model again "
           "with k in-format examples. Knowledge is kept when the reference is not significantly less preferred and the "
           "probe brings the score back to the base's CI; lost when neither holds. Per-item evidence: `diagnosis/<task>.jsonl`.",
           ""]
    for d in diagnosed:
        out += [f"- {d['summary']}"]
    out += ["", "| task | verdict | reference top-1 base -> tuned [CI of delta] | log-lik/token delta [CI] | "
                "base [CI] | tuned | k-shot tuned | words base -> tuned |", "|---|---|---|---|---|---|---|---|"]
    for d in diagnosed:
        top = d.get("reference_top1")
        top_s = (f"{top['base']:.2f} -> {top['tuned']:.2f} [{top['ci_low']:+.2f}, {top['ci_high']:+.2f}]" if top else "n/a")
        ll = d["reference_ll_per_token"]
        b = d["base_score"]
        ch = d["output_changes"]
        out.append(f"| {d['task']} | **{d['verdict']}** | {top_s} | {ll['delta']:+.2f} [{ll['ci_low']:+.2f}, {ll['ci_high']:+.2f}] | "
                   f"{b['value']:.3f} [{b['ci_low']:.3f}, {b['ci_high']:.3f}] | {d['tuned_score']:.3f} | "
                   f"{d['recovered_score']['value']:.3f} | {ch['base']['mean_words']:.1f} -> {ch['tuned']['mean_words']:.1f} |")
    out.append("")
    return out


def _toolbox_lines(report: dict) -> list[str]:
    """Trainable parameters (next to the default LoRA's), the preference loss, and tasks left unscored, in words."""
    out = []
    params = report.get("trainable_parameters")
    if params:
        lora = params.get("lora_reference") or {}
        share = params["trainable"] / params["total"] if params.get("total") else 0.0
        line = f"Trainable parameters: {params['trainable']:,} of {params['total']:,} ({share:.3%})"
        if lora:
            line += (f"; ftpipe's default LoRA (r {lora['r']} on {', '.join(lora['target_modules'])}) trains "
                     f"{lora['trainable']:,} on this base model")
        out += ["", line + "."]
    pref = report.get("preference")
    if pref:
        out += ["", f"Preference tuning with {pref['loss'].upper()} (beta {pref['beta']}); preference tasks count a pair "
                    "right when the chosen reply (with its end-of-turn token) is more likely than the rejected one."]
    skipped = report.get("not_scored")
    if skipped and skipped.get("tasks"):
        out += ["", f"{skipped['reason']} ({', '.join(skipped['tasks'])})"]
    return out


def _baseline_lines(report: dict) -> list[str]:
    """Paired comparisons beside the main one: tuned against the few-shot base, and preference margins."""
    out = []
    for t in report["tasks"]:
        few = t.get("vs_few_shot")
        if few:
            p = f", McNemar p {few['mcnemar_p']:.4f}" if "mcnemar_p" in few else ""
            out.append(f"- {t['task']}: tuned {_fmt(t['tuned'])} against the base model's {report.get('few_shot_k')}-shot "
                       f"{_fmt(few['baseline'])}: {_signed(few['item_delta'])} [{_signed(few['ci_low'])}, "
                       f"{_signed(few['ci_high'])}]{p}, **{few['verdict']}**")
        margin = t.get("margin")
        if margin:
            unit = "nats per token" if margin.get("normalized") else "nats"
            out.append(f"- {t['task']}: mean margin log p(chosen) - log p(rejected), base {margin['base']:+.3f}, tuned "
                       f"{margin['tuned']:+.3f} {unit}: {_signed(margin['delta'])} [{_signed(margin['ci_low'])}, "
                       f"{_signed(margin['ci_high'])}]")
    return ["", "Against other baselines, paired on the same items:", ""] + out if out else []


def render_charts(report: dict, folder: Path) -> list[Path]:
    """learning_forgetting.png, tasks.png and loss.png, with matplotlib's file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    tasks = [t for t in report["tasks"] if t["kind"] != "perplexity"]
    if tasks:
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(tasks) + 1.5))
        names = [f"{t['task']} ({t['role']})" for t in tasks]
        deltas = [t["item_delta"] for t in tasks]
        errors = [[d - t["ci_low"] for d, t in zip(deltas, tasks)], [t["ci_high"] - d for d, t in zip(deltas, tasks)]]
        colors = ["tab:green" if t["role"] == "target" else "tab:blue" for t in tasks]
        ax.barh(names, deltas, xerr=errors, color=colors, capsize=4)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel("tuned - base (mean per-item score), with CI")
        ax.set_title("Learning (target, green) and forgetting (held-out, blue)")
        fig.tight_layout()
        written.append(_save(fig, folder / "learning_forgetting.png", plt))

        fig, axes = plt.subplots(1, len(tasks), figsize=(2.2 * len(tasks) + 1, 3), squeeze=False)
        for ax, t in zip(axes[0], tasks):
            values = [t["base"], t["tuned"]]
            half = (t["ci_high"] - t["ci_low"]) / 2
            ax.bar(["base", "tuned"], values, yerr=[0, half], color=["tab:gray", "tab:orange"], capsize=4)
            ax.set_title(t["task"], fontsize=9)
            ax.set_ylim(0, 1.05)
        axes[0][0].set_ylabel("score")
        fig.tight_layout()
        written.append(_save(fig, folder / "tasks.png", plt))
    steps = report.get("step_losses") or []
    curves = report.get("loss_curves") or {}
    if steps or curves:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        if steps:  # per optimizer step, as ftpipe logged it; validation (per checkpoint) on the same axis
            ax.plot([s["step"] for s in steps], [s["loss"] for s in steps], linewidth=1, label="training (per step)")
            validation = curves.get("validation") or []
            if validation:
                last = steps[-1]["step"]
                at = [round(last * (k + 1) / len(validation)) for k in range(len(validation))]
                ax.plot(at, validation, marker="o", label="validation (per checkpoint)")
            ax.set_xlabel("step")
        else:
            for split, losses in curves.items():
                ax.plot(range(1, len(losses) + 1), losses, marker="o", label=split)
            ax.set_xlabel("checkpoint")
        ax.set_ylabel("loss")
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, folder / "loss.png", plt))
    return written


def _save(fig, path: Path, plt) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_report(run_dir: Path, report: dict) -> Path:
    """Write report.json, report.md and the charts into a run folder."""
    write_json_atomic(run_dir / "report.json", report)
    faults.point("report")
    render_charts(report, run_dir)
    write_text_atomic(run_dir / "report.md", render_markdown(report))
    return run_dir / "report.md"


def rerender(run_dir: Path) -> Path:
    """`ftpipe report RUN`: render report.md and charts again from report.json."""
    from ftpipe.errors import RunNotFoundError

    path = run_dir / "report.json"
    if not path.exists():
        raise RunNotFoundError(f"{run_dir}: no report.json (the run did not get to evaluation)")
    return write_report(run_dir, json.loads(path.read_text()))
