"""``newsmtl demo``: the packaged model on the packaged sample articles. Torch-free.

Public API::

    from newsmtl.demo import load_samples, results_table, stream_demo

    articles = load_samples()                       # the 28 sample articles shipped with newsmtl
    results = Predictor.load(None).predict(articles)
    Console().print(results_table(articles, results))
"""

from __future__ import annotations

from newsmtl.demo._kafka import DemoTopics, stream_demo
from newsmtl.demo._samples import SAMPLES_RESOURCE, load_samples, read_samples_bytes
from newsmtl.demo._table import results_table, shorten, top_styles

__all__ = [
    "SAMPLES_RESOURCE",
    "DemoTopics",
    "load_samples",
    "read_samples_bytes",
    "results_table",
    "shorten",
    "stream_demo",
    "top_styles",
]
