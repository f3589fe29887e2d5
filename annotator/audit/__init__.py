"""Teacher-human agreement audit: can this teacher replace my human annotators?

``annotator audit --humans H.csv --teacher runs/X --out runs/X/audit`` compares the teacher's labels with human
annotations and writes ``report.json`` (machine-readable), ``report.md`` (a summary you can publish) and PNG plots
(``confusion_matrix.png``, ``per_class_agreement.png``, ``calibration.png``).

Inputs
------
* Human annotations (CSV/TSV, JSONL, Parquet), either *long* format with columns ``item_id`` (or ``id``),
  ``annotator``, ``label`` - one row per rating - or *wide* format with an ``item_id``/``id`` column and one column
  per annotator (columns such as ``text`` are ignored), or *simple* ``item_id,label`` gold. Empty cells and absent
  rows are missing ratings.
  A Label Studio JSON export (``annotator.audit.label_studio``) and the sheets of ``annotator sample`` are read as
  they are; an ``inclusion_prob`` column (the sampling design) adds the design-corrected accuracy.
  One annotator (gold) gives teacher-vs-gold accuracy, F1, kappa and calibration; agreement statistics need 2 or
  more. The Alternative Annotator Test recommends 3 (with fewer it runs and says the result is weak) and excludes
  annotators with fewer than ``--alt-test-min-items`` (30) items. A tied human vote has no majority.
* Teacher labels: a run directory (or its ``annotations.jsonl``) of a single-label pipeline - failed records are
  excluded and counted - or a table with ``item_id``/``id``, ``label`` and optional ``confidence``.
  Every human item id must occur in the teacher's output.
* The label set: ``--labels a,b,c``, else ``labels`` in the run's ``run.json``, else every observed label. Labels
  outside the set are an error. For ``--level ordinal`` the set's order is the scale order.

Report sections
---------------
1. Teacher vs the human majority label: accuracy, micro/macro/weighted F1, per-class P/R/F1, confusion matrix.
2. Chance-corrected agreement: Cohen's kappa (pairwise), Fleiss' kappa, Krippendorff's alpha (nominal, ordinal,
   interval; missing values allowed), Gwet's AC1, each with a percentile-bootstrap confidence interval.
3. Teacher-human next to human-human agreement, overall and per category; categories where the humans disagree
   (Fleiss category kappa < 0.4) are flagged.
4. The Alternative Annotator Test (Calderon, Reichart & Dror, ACL 2025) with a plain PASSED/FAILED verdict.
   Several ``--teacher`` values: one report each plus a side-by-side comparison (``annotator.audit.compare``).
5. Calibration of the teacher's confidence (reliability diagram, ECE, accuracy kept per confidence threshold).

``--min-agreement X`` exits with code 3 when the ``--gate-metric`` (default: Krippendorff's alpha of the teacher vs
the human majority) is below ``X``, after writing the report.

Modules: :mod:`~annotator.audit.run_audit` (the flow: load, compute, slices, write, gate),
:mod:`~annotator.audit.compute` (options and every statistic), :mod:`~annotator.audit.results` (the report's
models), :mod:`~annotator.audit.report` (report.md), :mod:`~annotator.audit.compare` (several teachers),
:mod:`~annotator.audit.sampling` (``annotator sample``). This package imports none of them, so a light part (e.g.
:mod:`~annotator.audit.calibration`) loads without scipy.
"""
