"""`make bench` holds together: the table prints as the README shows it, and every benchmark
it runs offers the one interface run_all.py calls (the measurements themselves take minutes
and run by hand, not here)."""

import importlib
import inspect

from bench import run_all
from bench.table import Row, render


def test_the_table_prints_each_claim_with_its_ratio_and_verdict():
    rows = [
        Row("materialize 100,000 sessions", "1.20 s", "COPY 0.80 s", 1.5, "<= 2x COPY", True),
        Row("webhooks | p99", "p99 2.5 s", "the goal 2 s", None, "p99 < 2 s", False),
    ]

    assert render(rows).splitlines() == [
        "| claim | measured | baseline | ratio | goal | met |",
        "|---|---|---|---|---|---|",
        "| materialize 100,000 sessions | 1.20 s | COPY 0.80 s | 1.50 | <= 2x COPY | yes |",
        "| webhooks \\| p99 | p99 2.5 s | the goal 2 s | — | p99 < 2 s | **no** |",
    ]


def test_every_benchmark_offers_measure_with_the_documented_signature():
    present = [name for name in run_all.BENCHMARKS if run_all.available(name)]
    assert present == ["materialize", "suggestions", "conflicts", "invoices", "webhooks", "http"]
    for name in present:
        measure = importlib.import_module(run_all.BENCHMARKS[name]).measure
        assert inspect.iscoroutinefunction(measure), name
        parameters = list(inspect.signature(measure).parameters.values())
        assert parameters[0].name == "url", name
        quick = inspect.signature(measure).parameters["quick"]
        assert quick.kind is inspect.Parameter.KEYWORD_ONLY, name
        assert quick.default is False, name
        # Anything else has a default: run_all.py passes only the url and quick.
        assert all(p.default is not p.empty for p in parameters[1:]), name
