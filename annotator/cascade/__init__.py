"""Teacher cascades: cheap teachers first, stronger ones for the rows they are unsure of, humans for the rest, with
thresholds chosen on a human sample so that the kept labels agree with humans at a named rate (see
``docs/cascade.md``).

* :mod:`annotator.cascade.guarantee`: the threshold maths (pure; Trust or Escalate, arXiv 2407.18370);
* :mod:`annotator.cascade.calibration`: ``annotator calibrate``: run the stages on the human sample, choose the
  thresholds, write the calibration file;
* :mod:`annotator.cascade.runner`: ``annotator run`` of a cascade pipeline;
* :mod:`annotator.cascade.report`: the report (Markdown, JSON, frontier plot).
"""
