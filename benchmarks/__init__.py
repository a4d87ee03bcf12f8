"""Efficiency benchmarks of MMICT Studio's methods on the teaching VLM (CPU), issue #7.

``python -m benchmarks [--quick] [--out DIR]`` (or ``make bench``) measures inference latency and LM
tokens, training cost per step, backbone memory and speed under 8-/4-bit quantisation, data
efficiency and shot scaling, and the HiFICL hot path, and writes ``report.json``, ``report.md``
and plotly figures (default ``benchmarks/results/``), with each goal marked PASS or FAIL.
"""
