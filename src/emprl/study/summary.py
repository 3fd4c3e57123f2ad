"""The RL study's verdict (one line per criterion) and report.md, from the report that
``emprl.study.run`` builds (statistics: emprl.study.report, docs/statistics.md)."""

from __future__ import annotations

import math

from emprl.evaluate.formats import DASH, interval, interval_p, number, plus_minus
from emprl.study.report import ARM_TITLES, F_BERT_FLOOR, LENGTH_LIMIT, REWARD_JUDGE, SFT_ROW

# -- the verdict: one line per criterion of the study -------------------------------------------------------


def _comparison(report: dict, arm: str, baseline: str = SFT_ROW) -> dict | None:
    for c in (report.get("pooled") or {}).get("comparisons", []):
        if c["arm"] == arm and c["baseline"] == baseline:
            return c
    return None


def _line(kind: str, criterion: str, met: bool | None, value: str) -> dict:
    return {"kind": kind, "criterion": criterion, "met": met, "value": value}


def _criterion(lines: list, kind: str, criterion: str, d: dict | None, test, value=None) -> None:
    """One line: ``test(d)`` decides it when the figure ``d`` was measured, else it is not measured."""
    lines.append(_line(kind, criterion, None if d is None else bool(test(d)),
                       "not measured" if d is None else (value(d) if value else interval(d, 4))))


def verdict(report: dict) -> list[dict]:
    """The study's criteria, each with its kind (primary: the one test declared before the run; secondary;
    guardrail; check), whether it is met (None: not measured) and the figure behind it. Only the primary
    line answers the study's question; the others are reported without a correction for their number."""
    emp, vs_placebo = _comparison(report, "empathy"), _comparison(report, "empathy", "placebo")
    used = sorted(set(report.get("all_seeds") or report["seeds"]))
    reused = sorted(set(used) & set(report.get("choice_seeds") or []))
    lines = [_line("check", "fresh seeds, every arm's (none used for choosing settings)", not reused,
                   f"seeds {used}; choice seeds {report.get('choice_seeds') or []}")]
    judge = report.get("primary_judge")
    primary = (vs_placebo or {}).get("primary")
    _criterion(lines, "primary", f"EmpRL - placebo (same seed), level agreement of the judge '{judge}' with the "
               "true levels, pooled over seeds: 95% CI lower bound > 0", primary, lambda d: d["ci_low"] > 0,
               lambda d: f"{interval(d, 2)} points, one-sided run-level p {d['p_value']:.3g}, "
                         f"{d['runs_positive']}/{d['runs']} seeds positive")
    r = (emp or {}).get("r_emp")
    _criterion(lines, "secondary", "EmpRL - SFT, pooled Delta R_emp: lower bound > 0", r, lambda d: d["ci_low"] > 0)
    need = math.ceil(0.8 * r["runs"]) if r else 4
    _criterion(lines, "secondary", f"EmpRL - SFT, Delta R_emp positive in at least {need} of "
               f"{r['runs'] if r else 5} seeds", r, lambda d: d["runs_positive"] >= need,
               lambda d: f"{d['runs_positive']}/{d['runs']}")
    _criterion(lines, "secondary", "EmpRL - placebo (same seed), pooled Delta R_emp: lower bound > 0",
               (vs_placebo or {}).get("r_emp"), lambda d: d["ci_low"] > 0)
    f = (emp or {}).get("f_bert")
    _criterion(lines, "guardrail", f"EmpRL - SFT, Delta F_BERT lower bound > {F_BERT_FLOOR}", f,
               lambda d: d["ci_low"] > F_BERT_FLOOR, lambda d: interval(d, 2))
    _criterion(lines, "guardrail", "EmpRL: no more empty replies than SFT (rate)", (emp or {}).get("empty"),
               lambda d: d["arm"] / max(1, d["samples"]) <= d.get("baseline", 0) / max(1, d.get("baseline_samples", 1)),
               lambda d: f"{d['arm']} of {d['samples']} samples; SFT {d.get('baseline', '?')} of "
                         f"{d.get('baseline_samples', '?')}")
    _criterion(lines, "guardrail", f"EmpRL - SFT, mean length within {LENGTH_LIMIT:g} words", (emp or {}).get("words"),
               lambda d: abs(d["delta"]) <= LENGTH_LIMIT, lambda d: interval(d, 2))
    d2 = (emp or {}).get("dist_2")
    lines.append(_line("check", "Dist-2 change reported", d2 is not None,
                       "not measured" if d2 is None else plus_minus(d2)))
    dpo = [r for r in report["rows"] if r["arm"] == "dpo"]
    if dpo:
        ppo = [r["reward_evaluations"] for r in report["rows"] if r["arm"] == "empathy"]
        got = [r["reward_evaluations"] for r in dpo]
        lines.append(_line("check", "DPO at PPO's reward evaluations, same evaluation call",
                           bool(ppo) and None not in got and set(got) == set(ppo), f"DPO {got}, PPO {ppo}"))
    return lines


# -- report.md -----------------------------------------------------------------------------------------------


def _p_value(d: dict | None) -> str:
    return DASH if not d else f"{d['p_value']:.3g}"


def _poi(d: dict | None) -> str:
    return DASH if not d else f"{d['poi']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]"


def _title(comp: dict) -> str:
    base = SFT_ROW if comp["baseline"] == SFT_ROW else f"{ARM_TITLES[comp['baseline']]} (same seed)"
    return f"{ARM_TITLES[comp['arm']]} - {base}"


def report_markdown(report: dict) -> str:
    design = report.get("design") or {}
    arms = ", ".join(f"{ARM_TITLES[a]} `{report.get(k)}`" for a, k in
                     (("empathy", "ppo_recipe"), ("placebo", "placebo_recipe"), ("control", "control_recipe"),
                      ("dpo", "dpo_recipe")) if report.get(k))
    lines = [
        "# RL study: EmpRL against SFT and its controls, trained runs pooled",
        "",
        f"Arms: {arms}; trained seeds {report['seeds']}"
        f"{', overrides ' + ' '.join(report['ppo_overrides']) if report.get('ppo_overrides') else ''}. "
        f"One evaluation `{report['evaluate_recipe']}`"
        + (f": {design.get('contexts')} contexts x {design.get('samples_per_context')} samples x "
           f"decoding seeds {design.get('seeds')}" if design else "") + ", SFT scored once.",
        "",
    ]
    lines += _verdict_lines(report.get("verdict"))
    pooled = report.get("pooled")
    if pooled:
        lines += _pooled_lines(report, pooled)
    if report.get("trained_runs"):
        lines += _trained_run_lines(report["trained_runs"])
    lines += [
        "## Per run (each trained run against SFT, from the evaluation)", "",
        "Delta = run - SFT on the same contexts and sampling seeds, 95% bootstrap CI over contexts, p from the "
        "evaluation's paired test (see its results.md).", "",
        "| run | Delta R_emp | Delta Emp-F1 | Delta F_BERT | KL to ref | length | empty | reward evals | minutes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:
        p = r["paired"]
        lines.append(f"| {r['system']} | {interval_p(p.get('r_emp', {}), 4)} | {interval_p(p.get('emp_f1', {}), 2)} | "
                     f"{interval_p(p.get('f_bert', {}), 4)} | {number(r['kl'], 3)} | {number(r['length'])} | "
                     f"{number(r['empty_rate'], 3)} | {r.get('reward_evaluations') or '–'} | {number(r['minutes'], 1)} |")
    lines += ["", "KL to ref: PPO's held-out KL to the SFT policy at its last evaluation, else its last training "
              "batch's. Reward evals: samples scored by R_emp in training (PPO: steps x batch; DPO: contexts x K x "
              "rounds).",
              "", f"Wall time: {report['minutes_total']:.1f} min", ""]
    return "\n".join(lines)


def _verdict_lines(verdict_list) -> list[str]:
    if not verdict_list:
        return []
    if isinstance(verdict_list, dict):  # a report written before the criteria became a list
        return ["## Verdict", "", *(f"- {k}: **{v}**" for k, v in verdict_list.items()), ""]
    mark = {True: "met", False: "NOT met", None: "not measured"}
    return ["## Verdict (the study's criteria)", "",
            "The primary line is the one test declared before the run; secondary lines and guardrails are "
            "reported beside it, not combined with it.", "",
            *(f"- {v.get('kind', 'criterion')}: {v['criterion']}: **{mark[v['met']]}** ({v['value']})"
              for v in verdict_list), ""]


def _pooled_lines(report: dict, pooled: dict) -> list[str]:
    comps = pooled["comparisons"]
    n_boot = report.get("resamples")
    lines = [
        "## Pooled effect on R_emp (trained runs pooled)", "",
        f"Delta: mean over trained runs and contexts of arm - baseline (per-context means over all samples). "
        f"95% CI: two-level percentile bootstrap, {n_boot} resamples: trained runs drawn with replacement, then "
        "contexts, the same context draw for every arm in a replicate. p: exact sign-flip test at the unit the "
        "bootstrap draws first, the trained runs (two-sided; with S runs its smallest value is 2/2^S, 0.0625 at "
        "5 runs); a one-run comparison flips contexts. PoI: probability that a run "
        "of the arm scores a context higher than a run of the baseline (rliable). IQM: interquartile mean of "
        "all run x context values, arm minus baseline (rliable). Emp-F1 (reward): the reward identifiers' "
        f"Emp-F1 against the gold levels, pooled the same way. Source: {pooled.get('source')}.", "",
        "| comparison | runs | Delta R_emp [95% CI] | p | runs positive | PoI [95% CI] | Delta IQM [95% CI] | "
        "Delta Emp-F1 (reward) [95% CI] |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in comps:
        r = c.get("r_emp")
        poi, iqm = c.get("poi"), (c.get("iqm") or {}).get("delta")
        lines.append(f"| {_title(c)} | {len(c['systems'])} | {interval(r, 4)} | {_p_value(r)} | "
                     f"{'–' if not r else str(r['runs_positive']) + '/' + str(r['runs'])} | "
                     f"{_poi(poi)} | "
                     f"{interval(iqm, 4, 'iqm')} | {interval(c.get('emp_f1'), 2)} |")
    lines += ["", "### Per-run intervals (one-level bootstrap over contexts)", "",
              "| comparison | seed | Delta R_emp [95% CI] |", "| --- | --- | --- |"]
    for c in comps:
        for seed, run in zip(c["seeds"], (c.get("r_emp") or {}).get("per_run", [])):
            lines.append(f"| {_title(c)} | {seed} | {interval(run, 4)} |")
    judged = [(c, j, e) for c in comps for j, e in (c.get("judges") or {}).items()]
    lines += ["", "## Judges against the true levels", ""]
    if judged:
        lines += ["Emp-F1 and level accuracy (% of samples x mechanisms) of each judge's levels on the generated "
                  "replies against the true levels the data's composer wrote; pooled like R_emp (Emp-F1: per run "
                  f"from summed per-context counts). `{REWARD_JUDGE}`: the reward model itself, not independent.", "",
                  "| judge | comparison | Delta Emp-F1 [95% CI] | p | Delta accuracy [95% CI] | p |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {j} | {_title(c)} | {interval(e['emp_f1'], 2)} | {_p_value(e['emp_f1'])} | "
                  f"{interval(e['accuracy'], 2)} | {_p_value(e['accuracy'])} |" for c, j, e in judged]
    else:
        lines.append("No true levels or judges in this evaluation (contexts.jsonl has no `true` levels).")
    lines += ["", "## Guardrails", "",
              f"F_BERT (relevance, x100) and words pooled like R_emp; the guardrails ask for a Delta F_BERT lower "
              f"bound above {F_BERT_FLOOR}, no empty reply and a length change under {LENGTH_LIMIT:g} words. Dist-2: "
              "corpus level, mean over runs ± 95% Student t over trained runs.", "",
              "| comparison | Delta F_BERT [95% CI] | empty replies | Delta words [95% CI] | Delta Dist-2 |",
              "| --- | --- | --- | --- | --- |"]
    for c in comps:
        empty = c.get("empty")
        lines.append(f"| {_title(c)} | {interval(c.get('f_bert'), 2)} | "
                     f"{'–' if not empty else str(empty['arm']) + ' / ' + str(empty['samples'])} | "
                     f"{interval(c.get('words'), 2)} | "
                     f"{plus_minus(c.get('dist_2'))} |")
    if pooled.get("variance"):
        lines += _variance_lines(pooled["variance"])
    return lines + [""]


def _variance_lines(v: dict) -> list[str]:
    sft, d, design = v["sft"], v["difference"], v["design"]
    lines = ["", "## Variance of R_emp and the design it calls for", "",
             f"SFT, per sample: between-context variance {sft['between_context']:.5f}, within-context (between "
             f"samples) {sft['within_context']:.5f} (ICC {sft['icc']:.2f}, {sft['contexts']} contexts x "
             f"{sft['samples_per_context']:.1f} samples).",
             f"EmpRL - SFT, per-context difference: between trained runs {d['run']:.2e}, between contexts "
             f"{d['context']:.2e}, run x context {d['run_x_context']:.2e}, per sample {d['within_arm']:.4f} (EmpRL) "
             f"and {d['within_baseline']:.4f} (SFT); SD of the run-averaged per-context difference "
             f"{d['sd_context_difference']:.4f}.",
             "Var(pooled Delta) = run/S + (context + within_SFT/n)/K + (run x context + within_EmpRL/n)/(S K). "
             f"Power of this design ({design['runs']} runs x {design['contexts']} contexts x "
             f"{design['samples']:g} samples): " + ", ".join(f"{float(e):+.4f}: {p:.2f}" for e, p in
                                                         v["power_at_design"].items()) + ".", ""]
    for block in v["sizing"]:
        lines += [f"Contexts needed for 80% power (two-sided 0.05) at Delta R_emp {block['effect']:+.4f} "
                  "('–': the between-run variance alone is too large for that many runs):", "",
                  "| runs | " + " | ".join(f"n = {n}" for n in v["samples_options"]) + " |",
                  "| --- " * (len(v["samples_options"]) + 1) + "|"]
        for row in block["rows"]:
            lines.append(f"| {row['runs']} | " + " | ".join(
                "–" if row["contexts"][str(n)] is None else str(row["contexts"][str(n)])
                for n in v["samples_options"]) + " |")
        lines.append("")
    return lines


def _digits(metric: str) -> int:
    return 4 if metric == "r_emp" else 2  # R_emp lies in (0, 1] and moves by hundredths


def _trained_run_lines(table: dict) -> list[str]:
    keys: list[str] = []
    for row in table.values():
        keys += [k for k in row if k not in keys]
    titles = {SFT_ROW: SFT_ROW, **ARM_TITLES}
    lines = ["## Mean ± 95% CI over trained runs (the paper's kind of interval)", "",
             "Each trained run's value is its mean over the decoding seeds; the interval is Student t over the "
             "arm's trained runs (n runs), as the paper's ± over 5 trained EmpRL runs (PPL therefore has one). "
             "SFT is one trained run: no interval.", "",
             "| arm | n | " + " | ".join(keys) + " |", "| --- | --- " + "| --- " * len(keys) + "|"]
    for arm, row in table.items():
        n = max((c["runs"] for c in row.values()), default=0)
        lines.append(f"| {titles.get(arm, arm)} | {n} | " + " | ".join(
            plus_minus(row.get(k), _digits(k), key="mean").lstrip("+") if row.get(k) else "–" for k in keys) + " |")
    lines += ["", "### Decoding-seed interval (the second figure)", "",
              "Mean over the arm's runs of each run's 95% Student t half-width over its decoding seeds (the same "
              "trained weights sampled again): it leaves out how training varies and is not the paper's interval.", "",
              "| arm | " + " | ".join(keys) + " |", "| --- " * (len(keys) + 1) + "|"]
    for arm, row in table.items():
        lines.append(f"| {titles.get(arm, arm)} | " + " | ".join(
            "–" if not row.get(k) or row[k]["decoding_ci95"] is None else f"± {row[k]['decoding_ci95']:.{_digits(k)}f}"
            for k in keys) + " |")
    return lines + [""]


