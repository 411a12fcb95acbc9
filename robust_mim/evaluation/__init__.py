"""Evaluation: the one attack suite, its sanity checks, the per-example worst case and the one verdict rule.

- `robust_mim.evaluation.suite`: the suite of attacks a classifier gets, built from the profile's
  ``evaluation`` values (`evaluation_suite`), `run_suite`, accuracy and the sanity checks (gradient
  masking, a too-weak attack).
- `robust_mim.evaluation.worst_case`: the headline robust accuracy, per example over every attack run.
- `robust_mim.evaluation.verdict`: held / not held / inconclusive (within noise) / not run, and the noise allowances.
"""
