"""Evaluation, the reports: results.json, results.md (with the paper's figures beside ours),
examples.md, the generations and the per-sample files (samples.jsonl, contexts.jsonl), written whole
into the stage's folder."""

from __future__ import annotations

import os
import re

from emprl.common.mechanisms import MECHANISM_SHORT
from emprl.evaluate.formats import EM_DASH, interval, json_safe, number
from emprl.evaluate.scoring import paired_differences
from emprl.pipeline.config import config_to_dict

# (key in results, column title, decimals); PPL is handled apart (one value per system).
# Emp-F1 (reward): graded by the reward's own identifiers, the ones that trained the RL policies.
SEED_METRICS = [("dist-1", "Dist-1", 2), ("dist-2", "Dist-2", 2), ("emp_f1", "Emp-F1 (reward)", 2),
                ("r_emp", "R_emp", 3), ("length", "Length", 2)]
RELEVANCE_METRIC = ("f_bert", "F_BERT", 2)  # a column only when relevance_encoder is set
# Paired differences: (key, title, decimals).
PAIRED_METRICS = [("r_emp", "R_emp", 3), ("emp_f1", "Emp-F1", 2), ("f_bert", "F_BERT", 2)]
REFERENCE_METRICS = [("bleu-1", "BLEU-1", 2), ("bleu-2", "BLEU-2", 2), ("rouge-l", "ROUGE-L", 2)]
# Ma et al., IEEE TAFFC 2025: the figures printed beside ours in results.md, per table: caption,
# column titles, rows (system, values...).
PAPER_TABLES = {
    "ed": ("Tables II and VI, EmpatheticDialogues test", ("PPL", "Dist-1", "Dist-2", "Emp-F1"), [
        ("w/o RL (T5 SFT)", 11.95, 4.01, 25.24, 65.70), ("EmpRL", 12.90, 4.65, 29.03, 69.43),
        ("Llama3 (Llama-3-8B LoRA SFT)", 7.78, 4.77, 28.78, 67.74),
        ("w/o KL (600 steps)", 14.49, 4.79, 29.88, 68.87), ("w/o empathy reward", 12.10, 3.96, 25.13, 65.90)]),
    "pec": ("Table III, PEC test", ("PPL", "Dist-1", "Dist-2", "Emp-F1"), [
        ("T5", 18.89, 4.30, 25.51, 69.84), ("Llama3", 13.78, 5.32, 28.79, 70.98),
        ("EmpRL", 20.25, 4.96, 28.43, 72.73)]),
    "dailydialog": ("Table VII, DailyDialog test", ("BLEU-1", "BLEU-2", "ROUGE-L"), [
        ("T5", 30.46, 18.66, 9.64), ("Llama3", 31.49, 19.78, 12.28), ("EmpRL", 28.76, 17.66, 9.21)]),
}


# -- outputs ----------------------------------------------------------------------------------------------


def write_outputs(cfg, results, run, contexts, references, conv_ids, *, kind, with_refs, with_paper,
                  runtime_s, gold=None, true=None, judge_reference=None) -> dict:
    from emprl.common.io import atomic_dir, atomic_write_json, atomic_write_jsonl, atomic_write_text
    from emprl.evaluate.scoring import summarise

    slugs = unique_slugs(results)
    report = {
        "stage": "evaluate", "data": cfg.data, "data_kind": kind, "split": cfg.split,
        "num_examples": len(contexts), "seeds": list(cfg.seeds),
        "decoding": {k: getattr(cfg, k) for k in ("top_k", "top_p", "temperature", "max_new_tokens", "do_sample")},
        "reference_metrics": with_refs, "runtime_s": round(runtime_s, 1), "systems": {},
        "samples_per_context": cfg.samples_per_context, "relevance_encoder": cfg.relevance_encoder,
        "notes": list(cfg.notes),
        "paired": paired_differences(cfg, results),
        "paper_reference": paper_reference(cfg.paper_table or "ed") if with_paper else None,
        # who grades: the reward's identifiers trained the RL policies; the judges did not
        "reward_identifiers": cfg.identifiers_dir,
        "judges": {"specs": dict(cfg.judges), "reference": judge_reference} if cfg.judges else None,
        "recipe": config_to_dict(cfg),
    }
    for name, res in results.items():
        report["systems"][name] = {
            "source": res["source"], "kind": res["kind"], "ppl": res["ppl"], "ppl_tokens": res["ppl_tokens"],
            "per_seed": {str(s): v for s, v in res["per_seed"].items()}, "summary": res["summary"],
            "generations": {str(s): f"generations/{slugs[name]}/seed{s}.jsonl" for s in res["responses"]},
            "samples_per_context": res["samples_per_context"],
            # one value per test context, averaged over all seeds and samples (the paired comparison's input)
            "per_context": {key: None if res["per_context"][key] is None else res["per_context"][key].tolist()
                            for key in ("r_emp", "f_bert")},
            "judges": {j: {"per_seed": {str(s): v for s, v in runs.items()}, "summary": summarise(runs)}
                       for j, runs in (res["per_context"].get("judge_runs") or {}).items()},
        }
    with atomic_dir(cfg.output_dir) as tmp:
        for name, res in results.items():
            k = res["samples_per_context"]
            for seed, responses in res["responses"].items():
                atomic_write_jsonl(os.path.join(tmp, "generations", slugs[name], f"seed{seed}.jsonl"), [
                    {"conv_id": conv_ids[j // k], "context": list(contexts[j // k]), "reference": references[j // k],
                     "sample": j % k, "response": resp} for j, resp in enumerate(responses)])
        # Per-sample files for the pooled statistics (emprl.study.report): one line per reply, per context.
        atomic_write_jsonl(os.path.join(tmp, "samples.jsonl"), [
            {"system": name, **sample} for name, res in results.items()
            for sample in res["per_context"].get("samples") or []])
        if gold is not None:
            atomic_write_jsonl(os.path.join(tmp, "contexts.jsonl"), [
                {"context": i, "conv_id": str(conv_ids[i]), "gold": [int(v) for v in gold[i]],
                 "true": None if true is None else [int(v) for v in true[i]]} for i in range(len(contexts))])
        atomic_write_json(os.path.join(tmp, "results.json"), json_safe(report))
        atomic_write_text(os.path.join(tmp, "results.md"), results_markdown(report))
        atomic_write_text(os.path.join(tmp, "examples.md"),
                          examples_markdown(results, contexts, references, cfg.num_examples_shown))
        run.stamp(tmp)  # last: marks the folder complete
    return report


def results_markdown(report: dict) -> str:
    decoding = report["decoding"]
    sampling = (f"top-k {decoding['top_k']}, top-p {decoding['top_p']}, temperature {decoding['temperature']}"
                if decoding["do_sample"] else "greedy")
    n_seeds = len(report["seeds"])
    k = report.get("samples_per_context", 1)
    lines = [
        f"# EmpRL evaluation — `{report['data']}` [{report['split']}]", "",
        f"{report['num_examples']} examples, seeds {report['seeds']}, {k} sampled response{'s' if k > 1 else ''} "
        f"per example and seed; decoding: {sampling}, at most {decoding['max_new_tokens']} new tokens.", "",
        results_table(report), "",
        *(f"**Note.** {note}" for note in report.get("notes") or []), *([""] if report.get("notes") else []),
        "PPL: corpus-level perplexity of the reference responses under teacher forcing (all token NLLs of the "
        "test set summed, divided by the token count; one value per system, no sampling). Other columns: "
        f"mean ± 95% confidence interval (Student t) over {n_seeds} seed{'s' if n_seeds > 1 else ''}. "
        "Dist-n: distinct n-grams over all n-grams of all responses (corpus level), on case-sensitive NLTK "
        "word tokens as the authors counted them, ×100. Emp-F1 (reward): weighted F1 between the "
        "identifiers' levels on (context, reference) and on (context, response), mean of ER/IP/EX, ×100. "
        "R_emp: mean empathy reward exp(-L_emp) in (0, 1]. Both are graded by the reward's own identifiers "
        f"(`{report.get('reward_identifiers')}`), the ones that trained the RL policies: they measure how well "
        "a policy optimised its reward, not empathy seen by someone else. Length: mean words per response."
        + judges_note(report)
        + (f" F_BERT: relevance to the reference, the F1 of greedy cosine matching of the response's and the "
           f"reference's token embeddings (BERTScore-style, no idf, no rescaling) with `{report['relevance_encoder']}`"
           ", ×100." if report.get("relevance_encoder") else "")
        + (" BLEU-1/2: corpus BLEU; ROUGE-L: mean F1; both ×100." if report["reference_metrics"] else ""), "",
        *paired_markdown(report),
        "## Emp-F1 per mechanism and empty responses", "",
        "| System | ER | IP | EX | Empty (%) | Length |", "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, res in report["systems"].items():
        cells = [_cell(res["summary"].get(key), 2) for key in [f"f1_{m}" for m in MECHANISM_SHORT] + ["empty_rate"]]
        lines.append(f"| {name} | {' | '.join(cells)} | {_cell(res['summary'].get('length'), 2)} |")
    lines += ["", "Empty (%): share of responses that are empty after decoding (all samples of a seed); "
                  "Length: mean words per response."]
    paper = report["paper_reference"]
    if paper:
        lines += [
            "", "## Reference: the paper's figures", "",
            "| System (paper) | " + " | ".join(paper["columns"]) + " |", "| --- " * (len(paper["columns"]) + 1) + "|",
            *(f"| {r['system']} | " + " | ".join(f"{v:.2f}" for v in r["values"]) + " |" for r in paper["rows"]),
            "",
            f"These are the paper's figures (Ma et al., IEEE TAFFC 2025, {paper['caption']}; Dist-n there on "
            "case-sensitive NLTK word tokens, as here). They are not comparable to runs on other models or data, "
            "such as the offline demo or a smoke run (small models, bundled demo dialogues, a few examples).",
        ]
    lines += ["", f"Generations: `generations/<system>/seed<k>.jsonl`; examples side by side: `examples.md`. "
                  f"Runtime {report['runtime_s']:.0f} s.", ""]
    return "\n".join(lines)


def judge_names(report: dict) -> list[str]:
    return list((report.get("judges") or {}).get("specs") or {})


def judges_note(report: dict) -> str:
    judges = report.get("judges") or {}
    if not judges.get("specs"):
        return ""
    specs = "; ".join(f"{name}: `{spec}`" for name, spec in judges["specs"].items())
    return (f" Judges independent of the reward ({specs}; docs/judges.md): Emp-F1 [judge] and Acc [judge] grade "
            f"each generated reply with the judge and compare its levels with the {judges['reference']}; Acc: "
            "share of replies × mechanisms at the reference's level, ×100.")


def judges_paired_markdown(report: dict) -> list[str]:
    """Paired differences of the independent judges' Emp-F1 and accuracy (none without judges or pairs)."""
    rows = [(p, name, d) for p in report.get("paired") or [] for name, d in (p.get("judges") or {}).items()]
    if not rows:
        return []
    lines = ["## Paired differences under the independent judges", "",
             "| System | Baseline | Judge | Δ Emp-F1 [95% CI] | p | Δ Acc [95% CI] | p |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for p, name, d in rows:
        cells = [f"{interval(d[k], 2)} | {_p(d[k]['p_value'])}" for k in ("emp_f1", "accuracy")]
        lines.append(f"| {_md(p['system'])} | {_md(p['baseline'])} | {_md(name)} | " + " | ".join(cells) + " |")
    lines += ["", f"The judges grade the generated replies against the {report['judges']['reference']}; the "
              "resampling is that of Emp-F1 above (contexts drawn once for both systems, a paired permutation "
              "test for p).", ""]
    return lines


def paired_markdown(report: dict) -> list[str]:
    """The section of results.md on paired differences (none when the recipe pairs no systems)."""
    pairs = report.get("paired") or []
    if not pairs:
        return []
    metrics = [m for m in PAIRED_METRICS if any(p.get(m[0]) for p in pairs)]
    lines = ["## Paired differences against the SFT policy", "",
             "| System | Baseline | Contexts | K × seeds | "
             + " | ".join(f"Δ {title} [95% CI] | p" for _, title, _ in metrics) + " |",
             "| --- " * (4 + 2 * len(metrics)) + "|"]
    for p in pairs:
        (ka, kb), (sa, sb) = p["samples_per_context"], p["seeds"]
        samples = f"{ka} × {sa}" + ("" if (ka, sa) == (kb, sb) else f" / {kb} × {sb}")
        cells = []
        for key, _, dec in metrics:
            d = p.get(key)
            cells += [interval(d, dec), _p(d["p_value"])] if d else [EM_DASH, EM_DASH]
        lines.append(f"| {_md(p['system'])} | {_md(p['baseline'])} | {p['n_contexts']} | {samples} | "
                     + " | ".join(cells) + " |")
    n_boot = pairs[0]["r_emp"]["n_boot"]
    lines += ["", "Each row compares a system with its baseline on the same test contexts, sampled under the same "
              "seeds (K × seeds: responses per context for the system / the baseline where they differ). Δ = "
              "system − baseline. R_emp and F_BERT: the responses of a context (all seeds and samples) are averaged "
              "into one value, Δ is the mean over contexts of the per-context differences, the 95% CI a percentile "
              f"bootstrap over contexts ({n_boot} resamples, seed 0) and p a two-sided Wilcoxon signed-rank test on "
              "the per-context differences. Emp-F1 is a weighted F1 over all responses of all seeds, so each "
              "bootstrap resample draws the contexts once and recomputes it for both systems, and p comes from a "
              "paired permutation test that swaps the two systems' responses within random contexts. A CI wholly "
              "above 0 means the system beats its baseline on these contexts beyond context and sampling noise "
              "(see docs/paired_evaluation.md).", ""]
    return lines + judges_paired_markdown(report)


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def paper_reference(table: str) -> dict:
    caption, columns, rows = PAPER_TABLES[table]
    return {"table": table, "caption": caption, "columns": list(columns),
            "rows": [{"system": row[0], "values": list(row[1:])} for row in rows]}


def results_table(report: dict) -> str:
    columns = list(SEED_METRICS)
    if report.get("relevance_encoder"):
        columns.insert(4, RELEVANCE_METRIC)
    columns += REFERENCE_METRICS if report["reference_metrics"] else []
    judges = judge_names(report)
    titles = [title for _, title, _ in columns] + [f"{t} [{j}]" for j in judges for t in ("Emp-F1", "Acc")]
    lines = ["| System | PPL | " + " | ".join(titles) + " |", "| --- " * (len(titles) + 2) + "|"]
    for name, res in report["systems"].items():
        cells = [number(res["ppl"], 2, EM_DASH)] + [_cell(res["summary"].get(key), dec) for key, _, dec in columns]
        for j in judges:
            summary = ((res.get("judges") or {}).get(j) or {}).get("summary") or {}
            cells += [_cell(summary.get("emp_f1"), 2), _cell(summary.get("accuracy"), 2)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def examples_markdown(results: dict, contexts, references, n: int) -> str:
    """A few test contexts (evenly spread) with every system's first-seed response, like Table VIII."""
    from emprl.data import turn_roles

    total = len(contexts)
    picks = sorted({round(i * (total - 1) / max(n - 1, 1)) for i in range(min(n, total))}) if n > 0 else []
    lines = ["# Example responses", "",
             "Test contexts with each system's response (first seed, first sample) and the reference.",
             ""]
    for k, i in enumerate(picks, start=1):
        lines += [f"## Example {k} (test #{i})", ""]
        for role, turn in zip(turn_roles(len(contexts[i])), contexts[i]):
            lines.append(f"> **{role.capitalize()}:** {_md(turn)}  ")
        lines += ["", "| System | Response |", "| --- | --- |", f"| Reference | {_md(references[i])} |"]
        for name, res in results.items():
            first = res["responses"][min(res["responses"])]
            lines.append(f"| {_md(name)} | {_md(first[i * res['samples_per_context']]) or '*(empty)*'} |")
        lines.append("")
    return "\n".join(lines)


def unique_slugs(names) -> dict[str, str]:
    out, used = {}, set()
    for name in names:
        base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "system"
        slug, k = base, 2
        while slug in used:
            slug, k = f"{base}-{k}", k + 1
        used.add(slug)
        out[name] = slug
    return out


def _cell(stat: dict | None, decimals: int) -> str:
    if not stat:
        return EM_DASH
    if stat["ci95"] is None:
        return number(stat["mean"], decimals, EM_DASH)
    return f"{stat['mean']:.{decimals}f} ± {stat['ci95']:.{decimals}f}"


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")
