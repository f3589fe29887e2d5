"""``--class-weights balanced``: each label weighs the same in the student's loss and in its baseline's."""

from __future__ import annotations

import pytest

from annotator.student.baseline import fit_predict
from annotator.student.loop import class_weights


def test_balanced_weights_are_n_over_k_times_count():
    w = class_weights([0, 0, 0, 1], 3, False, "balanced")
    assert w.tolist() == pytest.approx([4 / (3 * 3), 4 / (3 * 1), 0.0])  # label 2 has no row: weight 0
    assert class_weights([0, 1], 2, False, "none") is None
    # multi-label: positives weigh negatives / positives; a label never (or always) present weighs 1
    pos = class_weights([[0], [0, 1], [0], []], 3, True, "balanced")
    assert pos.tolist() == pytest.approx([1 / 3, 3.0, 1.0])
    with pytest.raises(Exception, match="use none or balanced"):
        class_weights([0], 2, False, "inverse")


@pytest.mark.slow  # four short trainings of the tiny encoder
def test_a_weighted_loss_trains_differently_only_when_the_labels_are_uneven(tmp_path):
    """Even labels: every weight is 1 and training is the unweighted one, step for step; uneven labels: the
    rare label's rows weigh more and the losses differ."""
    from annotator.student.loop import TrainConfig, train_classifier
    from annotator.student.models import load_tokenizer_and_model
    from tests.tiny_model import tiny_base_model

    base = str(tiny_base_model(tmp_path / "tiny"))
    texts = [f"goal match {i}" for i in range(8)] + [f"vote senate {i}" for i in range(8)]

    def losses(targets: list[int], how: str) -> list[float]:
        import torch

        torch.manual_seed(3)  # the same fresh head each time (train-student seeds it the same way)
        tok, model = load_tokenizer_and_model(base, ["a", "b"])
        cfg = TrainConfig(epochs=1, max_length=8, batch_size=4, seed=3, device="cpu", class_weights=how)
        seen: list[float] = []
        train_classifier(model, tok, texts, targets, cfg, show_progress=False, on_step=lambda _s, x: seen.append(x))
        return seen

    even = [0] * 8 + [1] * 8
    assert losses(even, "balanced") == pytest.approx(losses(even, "none"), rel=1e-5)
    uneven = [0] * 14 + [1] * 2
    assert losses(uneven, "balanced") != pytest.approx(losses(uneven, "none"), rel=1e-3)


def test_the_baseline_weighs_a_rare_label_when_asked():
    """Unweighted, a strongly regularised baseline predicts the majority label everywhere; balanced, it finds
    the rare one."""
    train = [f"fine film {i}" for i in range(18)] + ["awful dull film", "dull awful plot"]
    labels = ["fresh"] * 18 + ["rotten"] * 2
    test = ["awful dull story", "fine film again"]
    plain, _ = fit_predict(train, labels, [], [], test)
    weighted, _ = fit_predict(train, labels, [], [], test, balanced=True)
    assert plain == ["fresh", "fresh"] and weighted == ["rotten", "fresh"]
