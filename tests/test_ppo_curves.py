"""What PPO shows while it runs and at its end: the rolling mean of the training reward, the three panels of
training_curves.png, and the closing line when no held-out evaluation ran."""

import numpy as np
import pytest

from emprl.ppo.curves import plot_training_curves, rolling_mean
from emprl.ppo.outputs import held_out_line


def test_rolling_mean_averages_the_last_window_of_steps():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert np.allclose(rolling_mean(x, window=2), [1.0, 1.5, 2.5, 3.5, 4.5])
    assert np.allclose(rolling_mean(x, window=10), [1.0, 1.5, 2.0, 2.5, 3.0])
    assert len(rolling_mean([])) == 0


def test_curves_are_drawn_with_and_without_a_held_out_evaluation(tmp_path):
    rows = [{"step": i, "reward": 0.1, "r_emp": 0.1 + 0.01 * (i % 3), "kl": 0.02 * i, "response_words": 20.0 + i}
            for i in range(1, 30)]
    for evals, name in (([], "none.png"), ([{"step": 0, "r_emp": 0.1}, {"step": 20, "r_emp": 0.12,
                                              "delta_r_emp_ci": [-0.01, 0.05]}], "with.png")):
        plot_training_curves(rows, evals, str(tmp_path / name))
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".tmp-*"))


def test_the_closing_line_says_no_evaluation_ran_instead_of_nan():
    line = held_out_line(None, {}, [{"step": 5, "r_emp": 0.1234, "kl": 0.5}])
    assert "no held-out evaluation ran" in line and "nan" not in line.lower() and "R_emp 0.1234" in line
    assert "reward 0.9000" in held_out_line(None, {}, [{"step": 5, "reward": 0.9, "kl": 0.5}])  # no empathy term
    line = held_out_line({"r_emp": 0.1}, {"r_emp": 0.12, "delta_r_emp": 0.02, "delta_r_emp_ci": [0.01, 0.03],
                                          "kl": 0.4}, [])
    assert "0.1000 (SFT) -> 0.1200 (PPO)" in line and "+0.0200" in line


@pytest.mark.parametrize("final", [{}, {"step": 3}])
def test_closing_line_without_training_rows(final):
    assert held_out_line(None, final, []) == "no held-out evaluation ran (eval_samples 0 or eval_steps 0)"
