"""The Rate tab (Gradio): a rater's name, the sheet, one blind item at a time, every answer saved at once.

Keyboard (docs/app.md): 1-5 rate empathy, then relevance, then fluency; a / t / b choose A better, tie,
B better; Enter saves and moves on; Left arrow goes back. Typing in a text box is left alone.
"""

from __future__ import annotations

import html

import gradio as gr

from emprl.app.rating import Owners, RatingSession, load_sheet
from emprl.common.errors import UserError
from emprl.human_eval.answers import StaleLog
from emprl.human_eval.sheets import ASPECTS

SCORES = [str(v) for v in range(1, 6)]
AB_CHOICES = [("A is better", "win"), ("Tie", "tie"), ("B is better", "lose")]

KEYS_JS = """
<script>
(() => {
  let aspect = 0;
  const pick = (id, value) => {
    const input = document.querySelector(`#${id} input[value="${value}"]`);
    if (input) { input.click(); }
  };
  const click = (id) => { const b = document.getElementById(id); if (b) { b.click(); } };
  document.addEventListener('click', (e) => {  // a new item (or the same one again) starts at empathy
    if (e.target.closest && e.target.closest('#rate-save, #rate-back, #rate-open')) { aspect = 0; }
  }, true);
  document.addEventListener('keydown', (e) => {
    const item = document.getElementById('rate-item');
    if (!item || item.offsetParent === null || e.ctrlKey || e.metaKey || e.altKey) return;
    const tag = (e.target.tagName || '').toLowerCase();
    if (tag === 'textarea' || (tag === 'input' && e.target.type === 'text')) return;
    if (e.key >= '1' && e.key <= '5') {
      pick(['rate-empathy', 'rate-relevance', 'rate-fluency'][aspect], e.key); aspect = (aspect + 1) % 3;
    } else if (e.key === 'a') { pick('rate-choice', 'win');
    } else if (e.key === 't') { pick('rate-choice', 'tie');
    } else if (e.key === 'b') { pick('rate-choice', 'lose');
    } else if (e.key === 'Enter') { click('rate-save'); e.preventDefault();
    } else if (e.key === 'ArrowLeft') { click('rate-back'); e.preventDefault();
    } else { return; }
  });
})();
</script>
"""


def _context_html(context: str) -> str:
    lines = [html.escape(line) for line in context.splitlines() if line.strip()]
    return "<div class='rate-context'>" + "<br>".join(lines) + "</div>"


def item_html(session: RatingSession, index: int) -> str:
    if index >= session.total:
        return (f"<p id='rate-done'>All {session.total} items have an answer. Thank you! "
                "(Back shows earlier items, to change an answer.)</p>")
    item = session.sheet.items[index]
    parts = [f"<p class='rate-kind'>{'Rate the reply' if item.kind == 'ratings' else 'Which reply is better?'}"
             f" <span class='rate-id'>({html.escape(item.item_id)})</span></p>", _context_html(item.context)]
    names = ("Reply",) if item.kind == "ratings" else ("Reply A", "Reply B")
    for name, text in zip(names, item.responses):
        parts.append(f"<p class='rate-reply'><b>{name}:</b> {html.escape(text)}</p>")
    return "\n".join(parts)


def render(session: RatingSession | None, index: int, note: str = ""):
    """Values of RATE_OUTPUTS for ``session`` at item ``index``."""
    if session is None:
        hidden = gr.update(visible=False)
        return (None, 0, note, "", "", hidden, None, None, None, hidden, None)
    index = max(0, min(index, session.total))
    answer = session.answer(index) or {}
    kind = session.sheet.items[index].kind if index < session.total else None
    answered = len(session.answers)
    shown = min(index + 1, session.total)
    progress = f"<span id='rate-progress-text'>{shown} / {session.total}</span> · {answered} answered · " \
               f"rater {html.escape(session.rater)}"
    return (session, index, note, progress, item_html(session, index),
            gr.update(visible=kind == "ratings"), *(answer.get(a) for a in ASPECTS),
            gr.update(visible=kind == "ab"), answer.get("choice"))


def warn(text: str) -> str:
    return f"⚠ {text}"


def build_rate_tab(default_sheet: str | None, owners: Owners) -> None:
    """The tab's components and events, inside an open ``gr.Blocks``."""
    with gr.Row():
        sheet = gr.Textbox(label="Sheet: the export folder (or its ratings.csv / ab.csv)", value=default_sheet or "",
                           elem_id="rate-sheet", scale=3)
        rater = gr.Textbox(label="Your name", elem_id="rate-rater", scale=1)
        open_btn = gr.Button("Open", elem_id="rate-open", scale=0)
    status = gr.Markdown(elem_id="rate-status")
    progress = gr.HTML(elem_id="rate-progress")
    item = gr.HTML(elem_id="rate-item")
    with gr.Group(visible=False) as ratings_box:
        radios = [gr.Radio(SCORES, label=f"{a.capitalize()} (1 very poor - 5 excellent)", elem_id=f"rate-{a}")
                  for a in ASPECTS]
    with gr.Group(visible=False) as ab_box:
        choice = gr.Radio(AB_CHOICES, label="Choice", elem_id="rate-choice")
    with gr.Row():
        back_btn = gr.Button("← Back", elem_id="rate-back")
        save_btn = gr.Button("Save and next →", elem_id="rate-save", variant="primary")
    gr.Markdown("Keys: **1-5** empathy, relevance, fluency in turn · **a** / **t** / **b** A better, tie, "
                "B better · **Enter** save and next · **←** back. Each answer is saved when you press save.")
    state, index = gr.State(None), gr.State(0)
    outputs = [state, index, status, progress, item, ratings_box, *radios, ab_box, choice]

    def on_open(sheet_path, name):
        try:
            session = RatingSession(load_sheet(sheet_path), name, owners)
        except UserError as err:
            return render(None, 0, warn(str(err)))
        note = f"Answers are saved in {session.log.path}."
        if session.answers:
            note = f"Resumed: {len(session.answers)} of {session.total} answered. " + note
        if session.replaced:
            note = warn(f"{session.rater} was also open in another tab (since {session.replaced}); "
                        "that tab no longer saves. ") + note
        return render(session, session.first_unrated(), note)

    def on_save(session, at, empathy, relevance, fluency, picked):
        if session is None:
            return render(None, 0, warn("Open a sheet with your name first."))
        if at >= session.total:
            return render(session, at, "Every item has an answer.")
        values = {"empathy": empathy, "relevance": relevance, "fluency": fluency, "choice": picked}
        try:
            session.save(at, values)
        except (UserError, StaleLog) as err:
            stale = " Press Open to reload the saved answers." if isinstance(err, StaleLog) else ""
            return _keep(session, at, warn(f"{err}{stale}"), values)
        return render(session, at + 1, f"Saved item {at + 1}.")

    def on_back(session, at):
        if session is None:
            return render(None, 0, "")
        return render(session, at - 1, "")

    open_btn.click(on_open, [sheet, rater], outputs)
    rater.submit(on_open, [sheet, rater], outputs)
    save_btn.click(on_save, [state, index, *radios, choice], outputs)
    back_btn.click(on_back, [state, index], outputs)


def _keep(session: RatingSession, index: int, note: str, values: dict):
    """render() but with the radios as the rater left them (an answer that was not saved stays on screen)."""
    out = list(render(session, index, note))
    out[6:9] = [values.get(a) for a in ASPECTS]
    out[10] = values.get("choice")
    return tuple(out)
