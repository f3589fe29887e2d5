"""Corpus statistics: each label's share of a corpus, from the teacher's labels of every item and human labels of a
sample, with confidence intervals that stay valid whatever the teacher's errors.

``annotator estimate --humans H --teacher runs/X [--by COLUMN]`` writes ``estimate.json``, ``estimate.md`` and a
forest plot. The parts: :mod:`~annotator.estimate.stats` (the estimators, numpy only), :mod:`~annotator.estimate.data`
(the population and the human sample as arrays), :mod:`~annotator.estimate.run` (orchestration),
:mod:`~annotator.estimate.report` and :mod:`~annotator.estimate.plot` (outputs). Reference: docs/estimate.md.
"""
