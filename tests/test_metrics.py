"""Metric modules and helpers against values worked out by hand on tiny inputs."""

import math
import socket

import pytest

from emprl.metrics import load_metric, mean_ci95, nltk_words, perplexity, split_words


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Loading and computing our local modules must not even look up a host name.

    Calls are recorded, not only refused, because evaluate swallows connection errors while it
    probes the hub (a bare name such as "accuracy" makes it resolve huggingface.co).
    """
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield
    assert not attempts, f"network access attempted: {attempts}"


def test_word_tokenize_keeps_apostrophes_numbers_and_splits_punctuation():
    assert split_words("Don\u2019t worry, it's 3.5 km... OK?") == [
        "don't",
        "worry",
        ",",
        "it's",
        "3.5",
        "km",
        "...",
        "ok",
        "?",
    ]
    assert split_words("1,000 people!!") == ["1,000", "people", "!", "!"]
    assert split_words("   ") == []


def test_distinct_hand_computed():
    # Case-sensitive NLTK tokens: [I, am, happy, .] and [i, am, sad, !].
    # Unigrams: 8 in all, distinct {I, i, am, happy, ., sad, !} = 7 -> 87.5.
    # Bigrams: (I am) (am happy) (happy .) (i am) (am sad) (sad !) = 6, all distinct -> 100.
    # "" adds no n-gram; n-grams never cross responses (no "." -> "i" bigram).
    out = load_metric("distinct").compute(predictions=["I am happy.", "", "i am sad!"])
    assert out["dist-1"] == pytest.approx(87.5)
    assert out["dist-2"] == pytest.approx(100.0)
    assert load_metric("distinct").compute(predictions=["", ""]) == {"dist-1": 0.0, "dist-2": 0.0}


def test_nltk_words_split_sentences_and_clitics_keeping_case():
    # The full stop inside the text is split off (NLTKWordTokenizer alone would keep "sorry.").
    assert nltk_words("I'm so sorry. Don't worry!") == ["I", "'m", "so", "sorry", ".", "Do", "n't", "worry", "!"]
    assert nltk_words("   ") == []


def test_emp_f1_hand_computed_weighted_f1():
    # Per example: (ER, IP, EX) levels.
    refs = [[0, 1, 2], [0, 1, 0], [1, 1, 2], [2, 1, 0]]
    preds = [[0, 1, 0], [1, 1, 2], [1, 1, 0], [2, 0, 2]]
    # ER  refs 0,0,1,2 preds 0,1,1,2: F1 class0 = 2/3 (P 1, R 1/2, support 2), class1 = 2/3 (P 1/2, R 1,
    #     support 1), class2 = 1 (support 1); weighted (2*2/3 + 2/3 + 1)/4 = 0.75.
    # IP  refs 1,1,1,1 preds 1,1,1,0: class1 P 1, R 3/4, F1 6/7 (support 4); class0 has no support -> 6/7.
    # EX  refs 2,0,2,0 preds 0,2,0,2: every prediction wrong -> 0.
    out = load_metric("emp_f1").compute(predictions=preds, references=refs)
    assert out["emotional_reactions"] == pytest.approx(75.0)
    assert out["interpretations"] == pytest.approx(600 / 7)
    assert out["explorations"] == pytest.approx(0.0)
    assert out["emp_f1"] == pytest.approx(375 / 7)  # (75 + 600/7 + 0) / 3

    # Streaming in batches gives the same corpus-level figure.
    metric = load_metric("emp_f1")
    metric.add_batch(predictions=preds[:2], references=refs[:2])
    metric.add_batch(predictions=preds[2:], references=refs[2:])
    assert metric.compute()["emp_f1"] == pytest.approx(375 / 7)

    with pytest.raises(ValueError, match="0, 1 or 2"):
        load_metric("emp_f1").compute(predictions=[[0, 3, 1]], references=[[0, 1, 1]])


def test_bleu_identical_and_hand_computed_partial_overlap():
    bleu = load_metric("bleu")
    same = bleu.compute(
        predictions=["I am so sorry to hear that."], references=["i am so sorry to hear that ."]
    )
    assert same["bleu-1"] == pytest.approx(100.0) and same["bleu-2"] == pytest.approx(100.0)

    preds = ["the cat sat on a mat", "Hello."]
    refs = ["the cat sat on the mat", "hello there."]
    # Clipped unigram matches: 5/6 (only "a" misses) + 2/2 ("hello", ".") = 7/8.
    # Bigram matches: 3/5 ("the cat", "cat sat", "sat on")
    #   + 0/1 ("hello ." against "hello there", "there .") = 3/6.
    # Lengths: hypothesis 6 + 2 = 8, reference 6 + 3 = 9 -> brevity penalty exp(1 - 9/8).
    bp = math.exp(1 - 9 / 8)
    out = bleu.compute(predictions=preds, references=refs)
    assert out["bleu-1"] == pytest.approx(100 * bp * 7 / 8)  # 77.22
    assert out["bleu-2"] == pytest.approx(100 * bp * math.sqrt(7 / 8 * 3 / 6))  # 58.37
    # First pair alone: same length, so BLEU-1 = 5/6 and BLEU-2 = sqrt(5/6 * 3/5) = sqrt(1/2).
    alone = bleu.compute(predictions=preds[:1], references=refs[:1])
    assert alone["bleu-2"] == pytest.approx(100 * math.sqrt(0.5))


def test_bleu_matches_nltk_corpus_bleu_when_available():
    nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
    preds = ["i am glad you are ok", "that sounds hard , i hope it gets better", "what happened ?"]
    refs = ["i am glad that you are fine", "that sounds really hard", "oh no , what happened ?"]
    out = load_metric("bleu").compute(predictions=preds, references=refs)
    hyps, lists = [p.split() for p in preds], [[r.split()] for r in refs]
    assert out["bleu-1"] == pytest.approx(100 * nltk_bleu.corpus_bleu(lists, hyps, weights=(1.0,)))
    assert out["bleu-2"] == pytest.approx(100 * nltk_bleu.corpus_bleu(lists, hyps, weights=(0.5, 0.5)))


def test_rouge_l_hand_computed():
    # Pair 1: LCS "the cat on the mat" = 5 of 6 tokens each side -> F = 5/6 (punctuation ignored).
    # Pair 2: LCS "i like tea" = 3; P = 3/3, R = 3/5 -> F = 2 * 1 * 0.6 / 1.6 = 0.75.
    out = load_metric("rouge_l").compute(
        predictions=["The cat sat on the mat!", "I like tea"],
        references=["the cat was on the mat", "i really like hot tea"],
    )
    assert out["rouge-l"] == pytest.approx(100 * (5 / 6 + 0.75) / 2)  # 79.17


def test_load_metric_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown metric"):
        load_metric("sacrebleu")


def test_mean_ci95_student_t():
    # 1..5: mean 3, sample sd sqrt(2.5), standard error sqrt(0.5); t(0.975, df 4) = 2.7764 (t table).
    mean, half = mean_ci95([1, 2, 3, 4, 5])
    assert mean == pytest.approx(3.0)
    assert half == pytest.approx(2.7764 * math.sqrt(0.5), abs=1e-4)  # 1.9632
    # Two values 0 and 2: standard error 1, t(0.975, df 1) = 12.706.
    assert mean_ci95([0.0, 2.0])[1] == pytest.approx(12.706, abs=1e-3)
    single = mean_ci95([4.2])
    assert single[0] == 4.2 and math.isnan(single[1])
    with pytest.raises(ValueError):
        mean_ci95([])


def test_perplexity_is_exp_of_mean_token_nll():
    assert perplexity(10 * math.log(4.0), 10) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        perplexity(1.0, 0)
