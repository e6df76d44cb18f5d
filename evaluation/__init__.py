"""Offline evaluation of the anomaly detectors.

- ``evaluation.nab``: the Numenta Anomaly Benchmark's scoring (windows, scaled
  sigmoid, per-profile threshold sweep, normalisation) and a runner that streams each
  series through a detector.
- ``evaluation.eval_cli``: the ``ecoretrofit eval`` subcommand.
- ``evaluation.faults``: scoring on simulated homes with injected faults (separate
  module, owned by the simulator side).
"""
