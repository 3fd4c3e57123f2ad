"""ETHREED baseline: components, losses, training, persistence, ablations (tiny configs, CPU)."""

import json
import math

import pytest
import torch

from emprl.baselines.ethreed.batching import (
    ED_EMOTIONS,
    IGNORE,
    LISTENER,
    SPEAKER,
    collate,
    encode_example,
    turn_roles,
)
from emprl.baselines.ethreed.components import (
    DialogueTracker,
    EmotionClassifier,
    EmpatheticPolicy,
    PointerGeneratorDecoder,
    UtteranceEncoder,
    emotion_loss,
    gps_loss,
)
from emprl.baselines.ethreed.config import EthreedTrainConfig
from emprl.baselines.ethreed.loop import evaluate_loss, make_loader, train_epoch
from emprl.baselines.ethreed.model import ETHREED, ETHREEDConfig
from emprl.baselines.ethreed.train import attach_listener_emotions, run
from emprl.baselines.ethreed.vocab import Vocab, load_glove
from emprl.common.errors import UserError
from emprl.metrics import split_words

H = 16

# Small hand-written dialogues; the listener's reply echoes a topic word so copying is learnable.
_TOPICS = ["dog", "job", "exam", "car", "garden", "concert", "flight", "sister", "cake", "storm"]
_FEEL = ["sad", "proud", "anxious", "angry", "joyful", "excited", "afraid", "lonely", "grateful", "furious"]


def _examples(n=20):
    rows = []
    for i in range(n):
        topic, feel = _TOPICS[i % 10], _FEEL[i % 10]
        ctx = [f"my {topic} made me feel {feel} today"]
        if i % 3:
            ctx = [f"i want to talk about my {topic}", f"sure , what about the {topic} ?", *ctx]
        rows.append({"context": ctx, "response": f"oh no , tell me more about the {topic} .",
                     "emotion": feel, "conv_id": f"c{i}"})
    return rows


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny tensors: extra threads only add contention on a shared 2-core machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def vocab():
    rows = _examples()
    return Vocab.build([t for r in rows for t in [*r["context"], r["response"]]])


def _tiny(vocab, **kw):
    torch.manual_seed(0)
    return ETHREED(ETHREEDConfig(vocab_size=len(vocab), embedding_dim=H, hidden_size=H, dropout=0.0, **kw))


def _batch(vocab, rows):
    return collate([encode_example(r, vocab) for r in rows], vocab.pad_id)


# ----- vocabulary and batching -------------------------------------------------------------------

def test_vocab_build_encode_decode_and_roundtrip(tmp_path):
    v = Vocab.build(["the cat sat", "The cat ran!", "a dog"], min_freq=2)
    assert v.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert set(v.itos[4:]) == {"the", "cat"}  # words seen once are dropped at min_freq 2
    ids = v.encode("The cat flew")
    assert ids == [v.stoi["the"], v.stoi["cat"], v.unk_id]
    assert v.decode([*ids, v.eos_id, v.stoi["cat"]]) == "the cat <unk>"  # stops at <eos>
    assert len(Vocab.build(["a b c d e f"], max_size=6)) == 6
    v.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json").itos == v.itos
    assert split_words("I don't know, Bob!") == ["i", "don't", "know", ",", "bob", "!"]


def test_glove_loader_fills_found_words_only(tmp_path):
    v = Vocab.build(["hello world", "hello there"])
    path = tmp_path / "glove.txt"
    path.write_text("hello 1 2 3\nabsent 4 5 6\nWorld 7 8 9\n", encoding="utf-8")
    weight, found = load_glove(str(path), v, 3, generator=torch.Generator().manual_seed(0))
    assert found == 2
    assert weight[v.stoi["hello"]].tolist() == [1, 2, 3]
    assert weight[v.stoi["world"]].tolist() == [7, 8, 9]  # case-folded match
    assert weight[v.pad_id].abs().sum() == 0
    assert weight[v.stoi["there"]].abs().sum() > 0  # random init, not zeros
    path.write_text("hello 1 2\n", encoding="utf-8")
    with pytest.raises(UserError, match="glove.txt:1"):
        load_glove(str(path), v, 3)


def test_batching_roles_labels_truncation(vocab):
    assert len(ED_EMOTIONS) == 32 and len(set(ED_EMOTIONS)) == 32
    assert turn_roles(4) == [LISTENER, SPEAKER, LISTENER, SPEAKER]
    ex = {"context": ["a dog", "the job", "my cake", "a car"], "response": "the storm", "emotion": "Sad",
          "listener_emotions": ["caring", "", "hopeful"]}
    enc = encode_example(ex, vocab, max_turns=3)
    assert enc["roles"] == [SPEAKER, LISTENER, SPEAKER]  # oldest turn dropped, roles kept from the end
    sad = ED_EMOTIONS.index("sad")
    assert enc["turn_emotions"] == [sad, IGNORE, sad]
    assert enc["response_emotion"] == ED_EMOTIONS.index("hopeful")
    assert enc["tgt_in"][0] == vocab.bos_id and enc["tgt_out"][-1] == vocab.eos_id
    assert enc["tgt_in"][1:] == enc["tgt_out"][:-1]
    with pytest.raises(UserError, match="unknown emotion"):
        encode_example({**ex, "emotion": "blissful"}, vocab)
    with pytest.raises(UserError, match="listener_emotions"):
        encode_example({**ex, "listener_emotions": ["caring"]}, vocab)

    b = collate([enc, encode_example(_examples()[0], vocab)], vocab.pad_id)
    B, T, L = b["turn_ids"].shape
    assert (B, T) == (2, 3) and b["num_turns"].tolist() == [3, 1]
    assert b["src_ids"].shape == (2, T * L) and b["src_mask"].sum() == b["turn_lens"].sum()
    assert b["tgt_mask"].sum() == len(enc["tgt_out"]) + len(b["tgt_out"][1][b["tgt_mask"][1]])


def test_attach_listener_emotions():
    rows = [{"context": ["s0", "l1", "s2"], "response": "l3", "conv_id": "x"},
            {"context": ["s0"], "response": "l1", "conv_id": "y"}]
    out = attach_listener_emotions(rows, {"x": ["", "caring", "", "sad"]}, "labels.jsonl")
    assert out[0]["listener_emotions"] == ["caring", "sad"]
    assert "listener_emotions" not in out[1]
    with pytest.raises(UserError, match="labels.jsonl"):
        attach_listener_emotions(rows, {"x": ["", "caring"]}, "labels.jsonl")


# ----- components --------------------------------------------------------------------------------

def test_utterance_encoder_shapes_and_padding_invariance():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, H, padding_idx=0)
    enc = UtteranceEncoder(emb, H).eval()
    ids = torch.randint(4, 50, (3, 7))
    lens = torch.tensor([7, 4, 0])
    u, states = enc(ids, lens)
    assert u.shape == (3, 2 * H) and states.shape == (3, 7, 2 * H)
    assert u[2].abs().sum() == 0 and states[1, 4:].abs().sum() == 0  # absent turn / padding positions
    # garbage in padded positions and extra padding columns leave u and the real states unchanged
    noisy = torch.cat([ids, torch.randint(4, 50, (3, 5))], dim=1)
    noisy[1, 4:] = torch.randint(4, 50, (noisy.shape[1] - 4,))
    u2, states2 = enc(noisy, lens)
    assert torch.allclose(u, u2, atol=1e-6)
    assert torch.allclose(states[:, :7], states2[:, :7], atol=1e-6)
    # forward state after the last real token, backward state at the first token
    alone, _ = enc(ids[1:2, :4], torch.tensor([4]))
    assert torch.allclose(u[1], alone[0], atol=1e-6)
    assert not torch.allclose(u[0], enc(ids[0:1, :4], torch.tensor([4]))[0][0])


def test_tracker_shapes_and_padding_turns():
    torch.manual_seed(0)
    tr = DialogueTracker(2 * H, H).eval()
    u = torch.randn(2, 3, 2 * H)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    roles = torch.tensor([[SPEAKER, LISTENER, SPEAKER], [SPEAKER, SPEAKER, SPEAKER]])
    state, emotions = tr(u, mask, roles)
    assert emotions.shape == (2, 3, H) and state.c.shape == (2, H) and state.emo.shape == (2, 2, H)
    # example 1 padded to 3 turns ends in the same state as the same turn alone
    alone, _ = tr(u[1:2, :1], mask[1:2, :1], roles[1:2, :1])
    assert torch.allclose(state.c[1], alone.c[0], atol=1e-6)
    assert torch.allclose(state.emo[1], alone.emo[0], atol=1e-6)
    assert state.emo[1, LISTENER].abs().sum() == 0  # no listener turn in example 1
    # the attention over earlier global states matters: other history -> other party state
    u2 = u.clone()
    u2[0, 0] += 1.0
    s2, _ = tr(u2, mask, roles)
    assert not torch.allclose(s2.party[0, SPEAKER], state.party[0, SPEAKER])


def test_classifier_and_policy_shapes():
    torch.manual_seed(0)
    clf = EmotionClassifier(H, 32)
    assert clf(torch.randn(5, H)).shape == (5, 32)
    pol = EmpatheticPolicy(H)
    e = torch.randn(5, H)
    z, mu, logvar = pol(e, sample=True, generator=torch.Generator().manual_seed(1))
    assert z.shape == mu.shape == logvar.shape == (5, H)
    assert not torch.allclose(z, mu)  # a sample, not the mean
    z_again, _, _ = pol(e, sample=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(z, z_again)
    zm, mu2, _ = pol(e, sample=False)
    assert torch.equal(zm, mu2)
    z.sum().backward()  # reparameterised: gradients reach the log-variance map
    assert pol.logvar.weight.grad.abs().sum() > 0


def test_gps_loss_is_kl_of_policy_from_target_paper_eq12():
    # q: the policy's predicted listener-emotion distribution, p: the target's; logits = log-probabilities
    q, p = [0.9, 0.05, 0.05], [0.3, 0.3, 0.4]
    kl_qp = sum(a * math.log(a / b) for a, b in zip(q, p))
    kl_pq = sum(b * math.log(b / a) for a, b in zip(q, p))
    assert abs(kl_qp - kl_pq) > 0.1  # the constructed pair tells the two directions apart
    pred, true = torch.tensor([q]).log(), torch.tensor([p]).log()
    assert gps_loss(pred, true).item() == pytest.approx(kl_qp, rel=1e-5)
    assert gps_loss(pred, true).item() != pytest.approx(kl_pq, rel=1e-2)
    assert gps_loss(pred, true, "kl_p_q").item() == pytest.approx(kl_pq, rel=1e-5)  # the optional direction
    with pytest.raises(ValueError, match="divergence"):
        gps_loss(pred, true, "js")


def test_gps_loss_zero_iff_distributions_match():
    logits = torch.randn(4, 32)
    assert gps_loss(logits, logits.clone()).item() == 0.0
    assert gps_loss(logits + 3.0, logits).item() == pytest.approx(0.0, abs=1e-6)  # same softmax
    other = torch.randn(4, 32)
    assert gps_loss(other, logits).item() > 1e-3


@pytest.mark.parametrize("emo_dim", [H, 0])
def test_pointer_generator_probabilities_sum_to_one(emo_dim):
    torch.manual_seed(0)
    V, S = 50, 9
    emb = torch.nn.Embedding(V, H, padding_idx=0)
    dec = PointerGeneratorDecoder(emb, H, 2 * H, emo_dim)
    enc_states = torch.randn(3, S, 2 * H)
    src_ids = torch.randint(4, V, (3, S))
    src_mask = torch.ones(3, S, dtype=torch.bool)
    src_mask[1, 5:] = False
    src_ids[1, 5:] = 0
    emo = torch.randn(3, emo_dim) if emo_dim else None
    state, keys = dec.start(torch.randn(3, H), enc_states)
    y = torch.tensor([2, 2, 2])
    for _ in range(4):
        probs, state, extra = dec.step(y, state, enc_states, keys, src_ids, src_mask, emo)
        assert probs.shape == (3, V) and (probs >= 0).all()
        assert torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-5)
        assert extra["alpha"][1, 5:].abs().sum() == 0  # no attention on padding
        assert torch.allclose(extra["alpha"].sum(-1), torch.ones(3), atol=1e-5)
        y = probs.argmax(-1)
    assert torch.allclose(state.coverage.sum(-1), torch.full((3,), 4.0), atol=1e-4)
    # copy mass sits on source words: with p_gen forced to 0 all probability is on source ids
    with torch.no_grad():
        dec.p_gen.bias.fill_(-1e4)
    probs, _, _ = dec.step(y, state, enc_states, keys, src_ids, src_mask, emo)
    off_source = torch.ones_like(probs, dtype=torch.bool).scatter(1, src_ids, False)
    assert probs[off_source].abs().max() < 1e-6


def test_teacher_forced_probability_matches_step_distribution(vocab):
    # training defers the vocabulary projection; it must give the same p(y_i) as decoding step by step
    model = _tiny(vocab).eval()
    b = _batch(vocab, _examples(3))
    with torch.no_grad():
        enc = model.encode(b)
        words = enc["word_states"]
        state, keys = model.decoder.start(enc["content"], words)
        feats, stepwise = [], []
        for i in range(b["tgt_in"].shape[1]):
            probs, state, f = model.decoder.step(b["tgt_in"][:, i], state, words, keys, b["src_ids"],
                                                 b["src_mask"], enc["emo"], model.copy_mask(b))
            feats.append(f)
            stepwise.append(probs.gather(1, b["tgt_out"][:, i : i + 1]).squeeze(1))
        batched = model.decoder.target_probability(feats, b["src_ids"], b["tgt_out"], model.copy_mask(b))
        nll, _, n = model._teacher_forced(b, enc)
    assert torch.allclose(batched, torch.stack(stepwise, 1), atol=1e-6)
    expected = -(torch.stack(stepwise, 1).log() * b["tgt_mask"]).sum()
    assert torch.allclose(nll.sum(), expected, rtol=1e-5)
    assert n == b["tgt_mask"].sum()


def test_attention_of_step_i_is_scored_against_the_previous_state():
    # D14: alpha_i comes from s_{i-1} and the coverage; changing the new state s_i alone leaves it unchanged
    torch.manual_seed(0)
    V, S = 30, 6
    dec = PointerGeneratorDecoder(torch.nn.Embedding(V, H), H, 2 * H, H).eval()
    enc_states, emo = torch.randn(2, S, 2 * H), torch.randn(2, H)
    mask = torch.ones(2, S, dtype=torch.bool)
    state, keys = dec.start(torch.randn(2, H), enc_states)
    state, _ = dec.recur(torch.tensor([2, 2]), state, enc_states, keys, mask, emo)  # step 1: coverage > 0
    y = torch.tensor([5, 7])
    with torch.no_grad():
        _, f = dec.recur(y, state, enc_states, keys, mask, emo)
        hook = dec.cell.register_forward_hook(lambda mod, args, out: out + 3.0)  # another s_i, same s_{i-1}
        _, g = dec.recur(y, state, enc_states, keys, mask, emo)
        hook.remove()
        assert not torch.allclose(f["s"], g["s"])
        assert torch.equal(f["alpha"], g["alpha"]) and torch.equal(f["ctx"], g["ctx"])
        # ... while s_{i-1} and the coverage both move it
        moved = dec.recur(y, type(state)(s=state.s + 1.0, ctx=state.ctx, coverage=state.coverage), enc_states,
                          keys, mask, emo)[1]
        assert not torch.allclose(moved["alpha"], f["alpha"])
        covered = dec.recur(y, type(state)(s=state.s, ctx=state.ctx, coverage=state.coverage * 0), enc_states,
                            keys, mask, emo)[1]
        assert not torch.allclose(covered["alpha"], f["alpha"])


def test_decoder_input_follows_eq15_unless_the_option_feeds_the_context():
    emb = torch.nn.Embedding(30, H)
    assert PointerGeneratorDecoder(emb, H, 2 * H, H).cell.input_size == H  # previous word only
    assert PointerGeneratorDecoder(emb, H, 2 * H, H, input_context=True).cell.input_size == 3 * H


def test_copy_distribution_puts_no_mass_on_listener_only_tokens(vocab):
    model = _tiny(vocab).eval()
    row = {"context": ["my dog was sad", "oh , why the garden ?", "my dog made me feel sad today"],
           "response": "tell me more", "emotion": "sad"}
    b = _batch(vocab, [row])
    garden, dog = vocab.stoi["garden"], vocab.stoi["dog"]
    with torch.no_grad():
        model.decoder.p_gen.bias.fill_(-1e4)  # copy only
        enc = model.encode(b)
        state, keys = model.decoder.start(enc["content"], enc["word_states"])
        probs, _, extra = model.decoder.step(b["tgt_in"][:, 0], state, enc["word_states"], keys, b["src_ids"],
                                             b["src_mask"], enc["emo"], model.copy_mask(b))
        assert extra["alpha"][0, b["src_ids"][0] == garden].sum() > 0  # attention still sees the listener turn
        assert probs[0, garden] < 1e-6  # ... but "garden" (listener turn only) is never copied
        assert probs[0, dog] > 1e-3 and probs.sum().item() == pytest.approx(1.0, abs=1e-5)
        tf = model.decoder.target_probability([extra], b["src_ids"], torch.tensor([[garden]]), model.copy_mask(b))
        assert tf.item() < 1e-6
        model.config.copy_from = "all"  # the option: copy from every turn
        assert model.copy_mask(b) is None
        probs_all, _, _ = model.decoder.step(b["tgt_in"][:, 0], state, enc["word_states"], keys, b["src_ids"],
                                             b["src_mask"], enc["emo"], model.copy_mask(b))
        assert probs_all[0, garden] > 1e-3


def test_emotion_loss_averages_speaker_and_listener_turns_separately():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 32)
    roles = torch.tensor([[SPEAKER, LISTENER, SPEAKER, SPEAKER]])
    labels = torch.tensor([[3, 7, 3, IGNORE]])
    ce = torch.nn.functional.cross_entropy(logits[0], torch.tensor([3, 7, 3, 0]), reduction="none")
    expected = (ce[0] + ce[2]) / 2 + ce[1]  # L1: mean over speaker turns + mean over listener turns
    assert emotion_loss(logits, labels, roles).item() == pytest.approx(expected.item(), rel=1e-5)
    assert emotion_loss(logits, labels, roles).item() != pytest.approx(ce[:3].mean().item(), rel=1e-3)
    no_listener = labels.masked_fill(roles == LISTENER, IGNORE)
    assert emotion_loss(logits, no_listener, roles).item() == pytest.approx(((ce[0] + ce[2]) / 2).item(), rel=1e-5)


def test_l1_ignores_the_response_emotion(vocab):
    # the reference response's emotion is the GPS target, not a term of L1
    model = _tiny(vocab).eval()
    row = {**_examples(1)[0], "context": ["i feel down", "why ?", "my dog"], "listener_emotions": ["caring", "sad"]}
    with torch.no_grad():
        a = model(_batch(vocab, [row]))["emotion_loss"]
        c = model(_batch(vocab, [{**row, "listener_emotions": ["caring", "joyful"]}]))["emotion_loss"]
    assert torch.equal(a, c) and a > 0


def test_policy_is_sampled_at_inference_unless_the_recipe_asks_for_the_mean(vocab):
    model = _tiny(vocab).eval()
    b = _batch(vocab, _examples(4))
    seen = []
    real = model.policy.forward
    model.policy.forward = lambda e, sample=True, generator=None: seen.append(sample) or real(e, sample, generator)
    model.generate(b, max_len=3, seed=1)
    model.generate(b, max_len=3, seed=1, sample_policy=False)
    assert seen == [True, False]


# ----- full model --------------------------------------------------------------------------------

def test_forward_losses_and_generate(vocab):
    model = _tiny(vocab)
    rows = _examples(4)
    rows[0] = {**rows[0], "context": ["i feel down", "why ?", rows[0]["context"][0]],
               "listener_emotions": ["caring", "sad"]}
    b = _batch(vocab, rows)
    out = model(b)
    for k in ("emotion_loss", "gps_loss", "nll_loss", "coverage_loss"):
        assert out[k].dim() == 0 and torch.isfinite(out[k]) and out[k] >= 0
    assert torch.allclose(out["loss"], out["emotion_loss"] + out["gps_loss"] + out["nll_loss"] + out["coverage_loss"])
    assert out["gps_loss"] > 0 and out["emotion_loss"] > 0
    assert out["n_tokens"] == b["tgt_mask"].sum()
    assert out["emotion_logits"].shape == (4, 32)
    out["loss"].backward()
    for name in ("policy.mu.weight", "tracker.party_gru.weight_ih", "tracker.emotion_gru.weight_hh",
                 "decoder.emotion_gate.weight", "decoder.emotion_gate.bias", "decoder.con_ffn.weight",
                 "decoder.emo_ffn.weight", "decoder.coverage_proj.weight", "classifier.net.0.weight",
                 "embedding.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name
    model.eval()
    greedy = model.generate(b, max_len=6, sample_policy=False)
    assert len(greedy) == 4 and all(len(r) <= 6 for r in greedy)
    assert all(t not in (vocab.pad_id, vocab.bos_id, vocab.unk_id, vocab.eos_id) for r in greedy for t in r)
    assert greedy == model.generate(b, max_len=6, sample_policy=False)
    assert model.generate(b, max_len=6, seed=5) == model.generate(b, max_len=6, seed=5)  # seeded policy draw
    s1 = model.generate(b, max_len=6, do_sample=True, top_k=5, temperature=1.2, seed=3)
    assert s1 == model.generate(b, max_len=6, do_sample=True, top_k=5, temperature=1.2, seed=3)


def test_training_reduces_loss_and_ppl_is_a_corpus_figure(vocab):
    model = _tiny(vocab)
    items = [encode_example(r, vocab) for r in _examples(16)]
    loader = make_loader(items, batch_size=4, shuffle=True, seed=0, pad_id=vocab.pad_id)
    eval_loader = make_loader(items, batch_size=16, pad_id=vocab.pad_id)

    def total(m):
        m.eval()
        with torch.no_grad():
            return float(m(next(iter(eval_loader)))["loss"])

    before = total(model)
    before_ppl = evaluate_loss(model, eval_loader)["ppl"]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(6):
        stats = train_epoch(model, loader, opt, progress=False)
    assert set(stats) >= {"loss", "emotion_loss", "gps_loss", "nll_loss", "coverage_loss"}
    after = total(model)
    assert after < 0.7 * before, (before, after)
    res = evaluate_loss(model, eval_loader)
    assert res["ppl"] < before_ppl
    # summed over tokens, so the batch size does not change the figure
    res1 = evaluate_loss(model, make_loader(items, batch_size=3, pad_id=vocab.pad_id))
    assert res1["tokens"] == res["tokens"]
    assert res1["ppl"] == pytest.approx(res["ppl"], rel=1e-4)
    assert res["ppl"] == pytest.approx(math.exp(res["nll_sum"] / res["tokens"]))
    assert 0.0 <= res["emotion_accuracy"] <= 1.0 and res["emotion_total"] == 16


def test_save_load_roundtrip(vocab, tmp_path):
    model = _tiny(vocab).eval()
    b = _batch(vocab, _examples(3))
    model.save_pretrained(tmp_path)
    loaded = ETHREED.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    assert loaded.decoder.output.weight is loaded.embedding.weight  # tying survives the round trip
    with torch.no_grad():
        a, c = model(b), loaded(b)
    assert torch.equal(a["loss"], c["loss"])
    assert model.generate(b, max_len=5, seed=0) == loaded.generate(b, max_len=5, seed=0)
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())


@pytest.mark.parametrize("switch", ["use_party_gru", "use_emotion_gru", "use_emotion_tracking",
                                    "use_policy", "use_gps_loss", "tie_embeddings"])
def test_ablation_switches(vocab, switch):
    full = _tiny(vocab)
    model = _tiny(vocab, **{switch: False})
    b = _batch(vocab, _examples(3))
    out = model(b)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    if switch in ("use_policy", "use_gps_loss", "use_emotion_tracking"):
        assert out["gps_loss"] == 0
    if switch == "use_emotion_tracking":
        assert out["emotion_loss"] == 0 and out["emotion_logits"] is None
        assert model.classifier is None and model.policy is None
    if switch != "use_gps_loss":  # this switch changes the loss, not the network
        assert model.num_parameters() != full.num_parameters()
    model.eval()
    assert len(model.generate(b, max_len=4)) == 3


def test_paper_size_parameter_count():
    # embedding 300, hidden 300, tied output projection: a 19,380-word vocabulary gives the paper's 11.98M
    n = ETHREED(ETHREEDConfig(vocab_size=19380)).num_parameters()
    assert abs(n - 11.98e6) / 11.98e6 < 0.005, n


def test_stage_run_writes_artifacts(tmp_path):
    rows = _examples(20)
    splits = {"train": rows[:12], "validation": rows[12:16], "test": rows[16:]}
    cfg = EthreedTrainConfig(data="emprl_json:unused", output_dir=str(tmp_path / "out"), embedding_dim=H,
                             hidden_size=H, epochs=2, max_decode_len=8, batch_size=4)
    metrics = run(cfg, splits=splits, progress=False)
    out = tmp_path / "out"
    assert {"model.safetensors", "config.json", "vocab.json", "train_config.json", "metrics.json", "README.md",
            "stage.json", "generations"} <= {p.name for p in out.iterdir()}
    assert len(metrics["epochs"]) == 2 and math.isfinite(metrics["ppl"])
    assert metrics["best_epoch"] in (1, 2)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["ppl"] == pytest.approx(metrics["ppl"]) and on_disk["num_parameters"] == metrics["num_parameters"]
    assert 0.0 <= on_disk["emotion_accuracy"] <= 1.0
    model = ETHREED.from_pretrained(str(out))
    assert model.num_parameters() == metrics["num_parameters"]
    assert len(Vocab.load(str(out / "vocab.json"))) == model.config.vocab_size


def test_stage_main_from_recipe(tmp_path):
    from datasets import Dataset, DatasetDict

    from emprl.baselines.ethreed.train import main

    rows = _examples(12)
    cols = lambda rs: {k: [r[k] for r in rs] for k in ("context", "response", "conv_id", "emotion")}  # noqa: E731
    DatasetDict({"train": Dataset.from_dict(cols(rows[:8])), "validation": Dataset.from_dict(cols(rows[8:10])),
                 "test": Dataset.from_dict(cols(rows[10:]))}).save_to_disk(str(tmp_path / "data"))
    labels = tmp_path / "listener.jsonl"
    labels.write_text(json.dumps({"conv_id": "c1", "emotions": ["", "caring", "", "sad"]}) + "\n")
    recipe = tmp_path / "ethreed.yaml"
    recipe.write_text(f"data: disk:{tmp_path / 'data'}\nlistener_emotions: {labels}\n"
                      f"output_dir: {tmp_path / 'out'}\nembedding_dim: 8\nhidden_size: 8\nepochs: 1\n")
    main([str(recipe), "--max_decode_len", "5", "--use_policy", "false"])
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["use_policy"] is False and cfg["hidden_size"] == 8
    assert len((tmp_path / "out" / "generations" / "seed0.jsonl").read_text().splitlines()) == 2
    with pytest.raises(UserError, match="listener_emotions"):
        main([str(recipe), "--listener_emotions", str(tmp_path / "missing.jsonl")])


# ----- shared-evaluation outputs: one generation run per seed, the stage stamp --------------------

def test_stage_writes_one_sampled_run_per_seed_and_the_stamp_last(tmp_path):
    from emprl.baselines.ethreed.loop import generate_responses, generate_runs
    from emprl.evaluate.systems import read_external_generations
    from emprl.pipeline.config import recipe_hash

    rows = _examples(20)
    splits = {"train": rows[:12], "validation": rows[12:16], "test": rows[16:]}
    out = tmp_path / "out"
    cfg = EthreedTrainConfig(data="emprl_json:unused", output_dir=str(out), embedding_dim=H, hidden_size=H,
                             epochs=1, max_decode_len=8, batch_size=4, eval_batch_size=3)
    assert (cfg.seeds, cfg.do_sample, cfg.top_k, cfg.temperature) == ([0, 1, 2], True, 20, 0.9)
    assert cfg.policy_inference == "sample"  # the paper's stochastic policy
    metrics = run(cfg, splits=splits, progress=False)

    runs = {}
    for seed in (0, 1, 2):
        lines = (out / "generations" / f"seed{seed}.jsonl").read_text().splitlines()
        runs[seed] = [json.loads(line) for line in lines]
        assert [(r["conv_id"], r["context"], r["reference"]) for r in runs[seed]] == \
            [(r["conv_id"], r["context"], r["response"]) for r in splits["test"]]
        assert all(isinstance(r["response"], str) for r in runs[seed])
    assert [r["response"] for r in runs[0]] != [r["response"] for r in runs[1]]  # independent samples

    # each file is reproducible from the saved artifacts, batch after batch
    model, vocab = ETHREED.from_pretrained(str(out)), Vocab.load(str(out / "vocab.json"))
    items = [encode_example(r, vocab) for r in splits["test"]]
    again = generate_responses(model, items, vocab, batch_size=3, max_len=8, do_sample=True, top_k=20,
                               temperature=0.9, seed=1, sample_policy=True, progress=False)
    assert again == [r["response"] for r in runs[1]]
    greedy = generate_runs(model, items, splits["test"], vocab, EthreedTrainConfig(
        data="x:y", max_decode_len=8, do_sample=False, policy_inference="mean"), progress=False)
    assert greedy[0] == greedy[1] == greedy[2]

    # the evaluation stage reads the folder as an external system; PPL sits beside the runs
    got = read_external_generations(str(out / "generations" / "seed{seed}.jsonl"), [0, 1, 2],
                                    [r["context"] for r in splits["test"]], [r["response"] for r in splits["test"]])
    assert got[2] == [r["response"] for r in runs[2]]
    beside = json.loads((out / "generations" / "metrics.json").read_text())
    assert beside["ppl"] == pytest.approx(metrics["ppl"]) and beside["num_parameters"] == metrics["num_parameters"]

    stamp = json.loads((out / "stage.json").read_text())
    assert stamp["stage"] == "ethreed" and stamp["complete"] and stamp["recipe_hash"] == recipe_hash(cfg)
    newest = max(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "stage.json")
    assert (out / "stage.json").stat().st_mtime_ns >= newest


def test_failed_stage_leaves_no_folder_and_no_stamp(tmp_path, monkeypatch):
    import emprl.baselines.ethreed.train as train_mod

    def broken(*args, **kwargs):
        raise RuntimeError("decoding failed")

    monkeypatch.setattr(train_mod, "generate_runs", broken)
    rows = _examples(8)
    cfg = EthreedTrainConfig(data="emprl_json:unused", output_dir=str(tmp_path / "out"), embedding_dim=8,
                             hidden_size=8, epochs=1, max_decode_len=4)
    with pytest.raises(RuntimeError, match="decoding failed"):
        run(cfg, splits={"train": rows[:4], "validation": rows[4:6], "test": rows[6:]}, progress=False)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary folder left behind either
    with pytest.raises(ValueError, match="seeds"):
        EthreedTrainConfig(data="x:y", seeds=[1, 1])


def test_paper_recipes_use_the_paper_forms_and_the_ablation_differs_only_in_l2():
    from dataclasses import fields
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1] / "recipes"
    folder = root / "ethreed_empathetic-dialogues"
    full = yaml.safe_load((folder / "ethreed.yaml").read_text())
    no_gps = yaml.safe_load((folder / "ethreed_no_gps.yaml").read_text())
    known = {f.name for f in fields(EthreedTrainConfig)}
    demo = yaml.safe_load((root / "demo" / "ethreed.yaml").read_text())
    for recipe in (full, no_gps, demo):
        assert set(recipe) <= known, set(recipe) - known
        assert (recipe["gps_divergence"], recipe["decoder_input_context"], recipe["copy_from"],
                recipe["policy_inference"], recipe["glove"]) == ("kl_q_p", False, "speaker", "sample", None)
    assert full["use_gps_loss"] is True and no_gps["use_gps_loss"] is False
    assert {k for k in full if full[k] != no_gps.get(k)} == {"use_gps_loss", "output_dir"}
    assert set(full) == set(no_gps) and full["output_dir"] != no_gps["output_dir"]


def test_stage_initialises_embeddings_from_a_local_glove_file(tmp_path, monkeypatch):
    import emprl.baselines.ethreed.train as train_mod

    monkeypatch.setattr(train_mod, "fit", lambda *a, **k: [])  # no training: the saved weights are the initial ones
    rows = _examples(8)
    glove = tmp_path / "glove.txt"
    glove.write_text("dog " + " ".join(["0.5"] * 8) + "\nnotaword " + " ".join(["9"] * 8) + "\n", encoding="utf-8")
    cfg = EthreedTrainConfig(data="emprl_json:unused", output_dir=str(tmp_path / "out"), embedding_dim=8,
                             hidden_size=8, epochs=1, max_decode_len=3, seeds=[0], glove=str(glove))
    run(cfg, splits={"train": rows[:4], "validation": rows[4:6], "test": rows[6:]}, progress=False)
    model = ETHREED.from_pretrained(str(tmp_path / "out"))
    vocab = Vocab.load(str(tmp_path / "out" / "vocab.json"))
    assert model.embedding.weight[vocab.stoi["dog"]].tolist() == [0.5] * 8
    assert model.embedding.weight[vocab.stoi["my"]].tolist() != [0.5] * 8
    with pytest.raises(UserError, match="glove.txt:1"):  # vectors shorter than embedding_dim: refused by line
        run(EthreedTrainConfig(**{**cfg.__dict__, "embedding_dim": 10, "output_dir": str(tmp_path / "o2")}),
            splits={"train": rows[:4], "validation": rows[4:6], "test": rows[6:]}, progress=False)
