"""The Compare tab (Gradio): two or more policies answer the same speaker side by side, each reply with its
levels (identifiers, oracle), R_emp against the reference's gold levels, and the decoding used."""

from __future__ import annotations

import html
import os

import gradio as gr

from emprl.app.compare import Comparer, Dialogue, Example, Turn, check_policy_folder
from emprl.common.errors import UserError
from emprl.common.mechanisms import LEVEL_NAMES, MECHANISM_SHORT, MECHANISMS
from emprl.common.policy import GenerationSettings
from emprl.data import turn_roles

DEFAULT_PAIR = ("t5_sft", "t5_ppo")  # the demo's T5 lane, ticked when both are there

CSS = """
.cmp-row { display: flex; gap: 12px; align-items: stretch; }
.cmp-col { flex: 1; border: 1px solid #ddd; border-radius: 8px; padding: 8px 10px; min-width: 0; }
.cmp-col h4 { margin: 0 0 2px 0; } .cmp-meta { color: #666; font-size: 0.85em; }
.cmp-turn { margin: 6px 0; } .cmp-you { color: #555; } .cmp-levels { font-size: 0.85em; color: #333; }
.cmp-context { background: #f6f6f6; border-radius: 8px; padding: 8px 10px; margin-bottom: 10px; }
.rate-context { background: #f6f6f6; border-radius: 8px; padding: 8px 10px; }
"""


def levels_text(levels) -> str:
    return " · ".join(f"{MECHANISM_SHORT[m]} {LEVEL_NAMES[v]}" for m, v in zip(MECHANISMS, levels))


def settings_text(s: dict) -> str:
    mode = f"top-k {s['top_k']}, top-p {s['top_p']}, temperature {s['temperature']}" if s["do_sample"] else \
        f"greedy, {s['num_beams']} beam(s)"
    return f"seed {s['seed']} · {mode} · at most {s['max_new_tokens']} new tokens"


def context_html(start: Example) -> str:
    roles = turn_roles(len(start.turns))
    turns = "".join(f"<div><b>{r.capitalize()}:</b> {html.escape(t)}</div>" for r, t in zip(roles, start.turns))
    ref = f"<div><b>Reference:</b> {html.escape(start.reference)}</div>"
    if start.gold is not None:
        ref += f"<div class='cmp-levels'>gold levels (identifiers): {levels_text(start.gold)}</div>"
    if start.true is not None:
        ref += f"<div class='cmp-levels'>true levels (demo composer): {levels_text(start.true)}</div>"
    return f"<div class='cmp-context'><div class='cmp-meta'>{html.escape(start.label)}</div>{turns}{ref}</div>"


def reply_html(rnd: Turn, folder: str) -> str:
    g = rnd.grades[folder]
    text = rnd.replies[folder] or "(no reply)"
    out = f"<div class='cmp-turn'><b>Listener:</b> <span class='cmp-reply'>{html.escape(text)}</span>"
    if g["levels"] is not None:
        out += f"<div class='cmp-levels'>identifiers: {levels_text(g['levels'])}</div>"
    if g["oracle"] is not None:
        out += f"<div class='cmp-levels'>oracle (phrase bank): {levels_text(g['oracle'])}</div>"
    if g["r_emp"] is not None:
        out += f"<div class='cmp-levels'>R_emp vs the reference's gold: <b>{g['r_emp']:.3g}</b></div>"
    return out + f"<div class='cmp-meta'>{settings_text(rnd.settings)}</div></div>"


def dialogue_html(d: Dialogue | None, comparer: Comparer) -> str:
    if d is None or not d.rounds:
        return "<p class='cmp-meta'>Pick a test context or type a message.</p>"
    head = context_html(d.start) if d.start else ""
    cols = []
    for folder in d.policies:
        stage = check_policy_folder(folder)
        body = []
        for rnd in d.rounds:
            if rnd.speaker is not None:
                body.append(f"<div class='cmp-turn cmp-you'><b>Speaker:</b> {html.escape(rnd.speaker)}</div>")
            body.append(reply_html(rnd, folder))
        cols.append(f"<div class='cmp-col' data-policy='{html.escape(os.path.basename(folder))}'>"
                    f"<h4>{html.escape(os.path.basename(os.path.normpath(folder)))}</h4>"
                    f"<div class='cmp-meta'>{stage} · {html.escape(folder)}</div>{''.join(body)}</div>")
    return head + "<div class='cmp-row'>" + "".join(cols) + "</div>"


def chosen_policies(picked, extra: str) -> list[str]:
    folders = list(picked or []) + [p.strip() for p in (extra or "").split(",") if p.strip()]
    folders = list(dict.fromkeys(folders))
    for folder in folders:
        check_policy_folder(folder)
    if len(folders) < 2:
        raise UserError(f"pick at least two policies to compare (got {len(folders)})")
    return folders


def build_compare_tab(comparer: Comparer, policies: list[str], contexts: list[Example]) -> None:
    """The tab's components and events, inside an open ``gr.Blocks``."""
    with gr.Row():
        pair = [p for p in policies if os.path.basename(p) in DEFAULT_PAIR]
        picked = gr.CheckboxGroup([(os.path.basename(p), p) for p in policies],
                                  value=pair if len(pair) == 2 else policies[:2],
                                  label="Policies (stage outputs)", elem_id="cmp-policies", scale=2)
        extra = gr.Textbox(label="Other stage output folders (comma-separated)", elem_id="cmp-extra", scale=2)
    context = gr.Dropdown([(c.label, str(i)) for i, c in enumerate(contexts)], value=None,
                          label=f"Test context ({len(contexts)} of the data's test split)", elem_id="cmp-context")
    with gr.Row():
        message = gr.Textbox(label="Your message (a new dialogue, or the next turn)", elem_id="cmp-message", scale=4)
        send = gr.Button("Reply", variant="primary", elem_id="cmp-send", scale=0)
        again = gr.Button("Sample again (next seed)", elem_id="cmp-again", scale=0)
        reset = gr.Button("Reset", elem_id="cmp-reset", scale=0)
    d = GenerationSettings()
    with gr.Accordion("Decoding", open=False):
        with gr.Row():
            decoding = [gr.Number(d.top_k, label="top_k", precision=0), gr.Number(d.top_p, label="top_p"),
                        gr.Number(d.temperature, label="temperature"),
                        gr.Number(d.max_new_tokens, label="max_new_tokens", precision=0),
                        gr.Checkbox(d.do_sample, label="sample (off: greedy)"),
                        gr.Number(d.seed, label="seed", precision=0, elem_id="cmp-seed")]
    status = gr.Markdown(elem_id="cmp-status")
    out = gr.HTML(dialogue_html(None, comparer), elem_id="cmp-out")
    state = gr.State(None)

    def play(dialogue, speaker, values):
        top_k, top_p, temperature, max_new, sample, seed = values
        try:
            settings = GenerationSettings(top_k=int(top_k), top_p=float(top_p), temperature=float(temperature),
                                          max_new_tokens=int(max_new), do_sample=bool(sample), seed=int(seed))
        except (TypeError, ValueError) as err:
            raise UserError(f"decoding: {err}") from None
        dialogue.rounds.append(comparer.play(dialogue, speaker, settings))
        return dialogue

    def result(dialogue, note=""):
        return dialogue, note, dialogue_html(dialogue, comparer)

    def on_context(choice, folders, more, *values):
        if choice in (None, ""):
            return result(None)
        try:
            dialogue = Dialogue(chosen_policies(folders, more), start=contexts[int(choice)])
            return result(play(dialogue, None, values))
        except UserError as err:
            return None, f"⚠ {err}", dialogue_html(None, comparer)

    def on_send(dialogue, text, folders, more, *values):
        try:
            policies_now = chosen_policies(folders, more)
            if not (text or "").strip():
                raise UserError("type a message (or pick a test context)")
            if dialogue is None or dialogue.policies != policies_now:
                dialogue = Dialogue(policies_now)
            return (*result(play(dialogue, text.strip(), values)), "")
        except UserError as err:
            return dialogue, f"⚠ {err}", dialogue_html(dialogue, comparer), text

    def on_again(dialogue, *values):
        if dialogue is None or not dialogue.rounds:
            return dialogue, "⚠ nothing to sample again yet", dialogue_html(dialogue, comparer), values[-1]
        last = dialogue.rounds.pop()
        values = (*values[:-1], int(values[-1]) + 1)
        try:
            return (*result(play(dialogue, last.speaker, values)), values[-1])
        except UserError as err:
            dialogue.rounds.append(last)
            return dialogue, f"⚠ {err}", dialogue_html(dialogue, comparer), values[-1] - 1

    context.change(on_context, [context, picked, extra, *decoding], [state, status, out])
    send.click(on_send, [state, message, picked, extra, *decoding], [state, status, out, message])
    message.submit(on_send, [state, message, picked, extra, *decoding], [state, status, out, message])
    again.click(on_again, [state, *decoding], [state, status, out, decoding[-1]])
    reset.click(lambda: (None, "New dialogue.", dialogue_html(None, comparer), None), None,
                [state, status, out, context])
