"""Benchmarks (``make bench``), one file per question; not part of the installed product.

Run each as ``python -m bench.<name>``; each writes ``out/bench_<name>.json`` through
``bench.summary.write``. ``bench.gpu_check`` is the self-contained check for the GPU machine.
"""
