"""How a dialogue context becomes model input — one place, so SFT, PPO, generation and evaluation
all see the same prompt.

- Encoder-decoder (T5): the tagged transcript from :func:`emprl.data.serialize_context`.
- Decoder-only with a chat template: speaker turns are ``user`` messages, listener turns
  ``assistant`` messages, and the template's generation prompt opens the listener's reply.
- Decoder-only without a template: the tagged transcript followed by the listener tag.
In every case the oldest turns are dropped first to fit ``max_source_tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from emprl.data.context import keep_recent_turns, serialize_context, turn_roles


@dataclass
class PromptBuilder:
    tokenizer: object
    is_encoder_decoder: bool
    max_source_tokens: int = 200
    speaker_tag: str = "Speaker:"
    listener_tag: str = "Listener:"
    system_prompt: str | None = None

    @property
    def uses_chat_template(self) -> bool:
        return not self.is_encoder_decoder and bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def generation_padding_side(self) -> str:
        # T5 batches are padded on the right (left padding made PPO's KL unstable, docs/padding-sides.md);
        # decoder-only models need the prompt to end where generation starts, so pad on the left.
        return "right" if self.is_encoder_decoder else "left"

    def text(self, turns: Sequence[str]) -> str:
        """The prompt as a string (what the model sees, special tokens of templates included)."""
        if self.is_encoder_decoder:
            return serialize_context(turns, self.tokenizer, self.max_source_tokens,
                                     self.speaker_tag, self.listener_tag)
        if self.uses_chat_template:
            kept = keep_recent_turns(turns, self._render_chat, self.tokenizer, self.max_source_tokens)
            return self._render_chat(kept)
        kept = keep_recent_turns(turns, self._render_plain, self.tokenizer, self.max_source_tokens)
        return self._render_plain(kept)

    def encode(self, turns: Sequence[str]) -> list[int]:
        """Token ids of the prompt; templates carry their own special tokens, so none are added."""
        return self.tokenizer(self.text(turns), add_special_tokens=not self.uses_chat_template)["input_ids"]

    def context_text(self, turns: Sequence[str]) -> str:
        """The plain tagged transcript (what the empathy identifiers read as the context)."""
        return serialize_context(turns, None, None, self.speaker_tag, self.listener_tag)

    # ------------------------------------------------------------------------------------------------

    def _messages(self, turns: Sequence[str]) -> list[dict]:
        roles = ["user" if r == "speaker" else "assistant" for r in turn_roles(len(turns))]
        messages = [{"role": role, "content": text} for role, text in zip(roles, turns)]
        if len(messages) > 1 and messages[0]["role"] == "assistant":
            messages = messages[1:]  # most chat templates expect the user to speak first
        if self.system_prompt:
            messages = [{"role": "system", "content": self.system_prompt}] + messages
        return messages

    def _render_chat(self, turns: Sequence[str]) -> str:
        return self.tokenizer.apply_chat_template(self._messages(turns), tokenize=False,
                                                  add_generation_prompt=True)

    def _render_plain(self, turns: Sequence[str]) -> str:
        return serialize_context(turns, None, None, self.speaker_tag, self.listener_tag) + f" {self.listener_tag}"
