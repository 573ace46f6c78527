"""Experiments: A/B assignment, trustworthy statistics, bandits, off-policy evaluation and a
ground-truth shop simulator (see ``docs/experiments.md``).

The service imports only :mod:`experiments.assignment`, :mod:`experiments.bandits` and
:mod:`experiments.exposure`; those stay light (NumPy and the standard library).
"""
