import json
import math
from collections import Counter

import pytest

from ratio import Bounds, Mixture, benefits

# the official 7B bounds: Qwen2.5-7B-Instruct 1121 tokens / 0.289, R1-Distill-Qwen-7B 7380 / 0.756
B = Bounds(short_tokens=1121, short_acc=0.289, long_tokens=7380, long_acc=0.756)
C = 1e-4


def test_update_too_long():
    m = Mixture()  # (0.5, 0.5), eta 4, c 1e-4
    r = m.update(B, dev_tokens=5000, dev_acc=0.756)
    b_short = (5000 - 1121) / (7380 - 1121)  # 0.6197...
    assert r["b_short"] == pytest.approx(b_short, rel=1e-12) and r["b_long"] == 0
    e_short, e_long = math.exp(math.log(0.5) + 4 * b_short), math.exp(math.log(0.5) + 4 * 0)
    w_short = (1 - C) * e_short / (e_short + e_long) + C / 2
    w_long = (1 - C) * e_long / (e_short + e_long) + C / 2
    assert m.weights == pytest.approx((w_short, w_long), rel=1e-12)
    assert (r["w_short"], r["w_long"]) == m.weights
    assert m.weights[0] == pytest.approx(0.9226, abs=1e-4)  # the set that fixes the gap gains


def test_update_lost_accuracy():
    m = Mixture(weights=(0.7, 0.3))
    r = m.update(B, dev_tokens=1000, dev_acc=0.5)  # shorter than the short model: b_short = 0
    b_long = (0.756 - 0.5) / (0.756 - 0.289)  # 0.5482...
    assert r["b_short"] == 0 and r["b_long"] == pytest.approx(b_long, rel=1e-12)
    e_short, e_long = math.exp(math.log(0.7) + 4 * 0), math.exp(math.log(0.3) + 4 * b_long)
    w_short = (1 - C) * e_short / (e_short + e_long) + C / 2
    w_long = (1 - C) * e_long / (e_short + e_long) + C / 2
    assert m.weights == pytest.approx((w_short, w_long), rel=1e-12)
    assert m.weights[1] > 0.5


def test_update_both_benefits_zero():
    m = Mixture(weights=(0.7, 0.3))
    r = m.update(B, dev_tokens=1121, dev_acc=0.8)  # as short as M_S, more accurate than M_L
    assert r["b_short"] == 0 and r["b_long"] == 0
    # softmax(log w) = w, so only the smoothing moves the weights, slightly towards 1/2
    assert m.weights == pytest.approx(((1 - C) * 0.7 + C / 2, (1 - C) * 0.3 + C / 2), rel=1e-12)


def test_benefits_formula_and_bad_dev_values():
    assert benefits(B, 7380, 0.289) == pytest.approx((1.0, 1.0))  # long model's length, short model's accuracy
    assert benefits(B, 1121, 0.756) == (0.0, 0.0)
    for tokens, acc in [(float("nan"), 0.5), (100, float("nan")), (-1, 0.5), (100, 1.5)]:
        with pytest.raises(ValueError, match="dev measurement"):
            benefits(B, tokens, acc)


def test_smoothing_floor_and_recovery():
    m = Mixture()
    for _ in range(1000):  # far too long, accuracy intact: everything pushes towards System-1
        m.update(B, dev_tokens=20000, dev_acc=0.756)
    assert C / 2 <= m.weights[1] < C
    assert sum(m.weights) == pytest.approx(1.0)
    # without the floor w_long would underflow to 0 and no benefit could bring it back
    for _ in range(5):
        m.update(B, dev_tokens=1000, dev_acc=0.289)
    assert m.weights[1] > 0.5


def test_static_mode():
    m = Mixture(weights=(1, 1), static=True)
    r = m.update(B, dev_tokens=5000, dev_acc=0.5)
    assert m.weights == (0.5, 0.5)
    assert r["b_short"] > 0 and r["b_long"] > 0 and (r["w_short"], r["w_long"]) == (0.5, 0.5)
    assert len(m.history) == 1


def test_state_round_trip():
    m = Mixture()
    m.update(B, 5000, 0.6)
    m.draw(0, 16, sizes=(10, 7), seed=3)
    m.draw(1, 16, sizes=(10, 7), seed=3)
    state = json.loads(json.dumps(m.state_dict()))  # goes through a checkpoint as plain JSON
    r = Mixture()
    r.load_state_dict(state)
    assert r.state_dict() == m.state_dict()
    assert r.draw(2, 16, sizes=(10, 7), seed=3) == m.draw(2, 16, sizes=(10, 7), seed=3)
    assert r.update(B, 3000, 0.7) == m.update(B, 3000, 0.7)
    with pytest.raises(ValueError, match="static"):
        Mixture(static=True).load_state_dict(state)


def test_draw_deterministic():
    a, b = Mixture(), Mixture()
    assert a.draw(5, 64, sizes=(100, 50), seed=0) == b.draw(5, 64, sizes=(100, 50), seed=0)
    a, b = Mixture(), Mixture()
    assert a.draw(5, 64, sizes=(100, 50), seed=0) != b.draw(6, 64, sizes=(100, 50), seed=0)
    a, b = Mixture(), Mixture()
    assert a.draw(5, 64, sizes=(100, 50), seed=0) != b.draw(5, 64, sizes=(100, 50), seed=1)


def test_draw_golden():
    # the draw depends on the seed only, not on the machine: if this changes (e.g. a numpy
    # release changed its streams), runs resumed from older checkpoints would draw other examples
    m = Mixture(weights=(0.5, 0.5))
    assert m.draw(0, 8, sizes=(10, 10), seed=0) == [(2, 8), (1, 9), (1, 1), (1, 3), (2, 2), (2, 1), (2, 0), (2, 5)]


def test_draw_follows_weights():
    m = Mixture(weights=(0.8, 0.2), static=True)
    draws = [s for step in range(100) for s, _ in m.draw(step, 100, sizes=(1000, 1000), seed=0)]
    share = draws.count(1) / len(draws)
    assert abs(share - 0.8) < 4 * math.sqrt(0.8 * 0.2 / len(draws))  # 4 sigma = 0.016
    assert m.cursors == [draws.count(1), draws.count(2)]


def test_draw_cycles_through_permutations():
    m = Mixture()
    sizes = (7, 5)
    draws = [d for step in range(20) for d in m.draw(step, 6, sizes, seed=0)]
    for system, size in ((1, sizes[0]), (2, sizes[1])):
        idx = [i for s, i in draws if s == system]
        epochs = [idx[j:j + size] for j in range(0, len(idx) - size + 1, size)]
        assert len(epochs) >= 3
        assert all(sorted(e) == list(range(size)) for e in epochs)  # every example once per epoch
        assert len({tuple(e) for e in epochs}) > 1  # a fresh order each epoch


def test_draw_empty_set():
    with pytest.raises(ValueError, match="System-2 data set is empty"):
        Mixture().draw(0, 4, sizes=(10, 0), seed=0)
    # a set with weight 0 (a static ablation on one set) may be empty
    assert Counter(s for s, _ in Mixture((1, 0), static=True).draw(0, 50, (10, 0), seed=0)) == {1: 50}


def test_bad_weights():
    for w in [(0, 0), (-1, 2), (float("nan"), 1), (1, 1, 1)]:
        with pytest.raises(ValueError, match="weights"):
            Mixture(weights=w)


@pytest.mark.parametrize("kw, match", [
    (dict(long_acc=0.2), "more accurate"),
    (dict(long_acc=0.289), "more accurate"),
    (dict(long_tokens=1000), "more tokens"),
    (dict(short_acc=float("nan")), "accuracies in"),
    (dict(long_acc=75.6), "accuracies in"),  # a percentage, not a fraction
    (dict(short_tokens=float("inf")), "tokens must be finite"),
    (dict(short_tokens=-5), "tokens must be finite"),
])
def test_bad_bounds(kw, match):
    args = dict(short_tokens=1121, short_acc=0.289, long_tokens=7380, long_acc=0.756)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        Bounds(**args)


def test_bounds_file(tmp_path):
    path = tmp_path / "bounds.json"
    path.write_text(B.to_json(short_model="Qwen2.5-7B-Instruct", n_problems=512, temperature=0.7))
    assert json.loads(path.read_text())["n_problems"] == 512
    assert Bounds.load(path) == B

    bad = tmp_path / "bad.json"
    for text in ['{"short": {"tokens": 7380, "accuracy": 0.756}, "long": {"tokens": 1121, "accuracy": 0.289}}',
                 '{"short": {"tokens": 1121}, "long": {"tokens": 7380, "accuracy": 0.756}}',
                 '{"short": ', '[]']:
        bad.write_text(text)
        with pytest.raises(ValueError, match="bad.json"):
            Bounds.load(bad)
