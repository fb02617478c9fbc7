"""How often the variance-component intervals cover the truth: a simulation.

    python bench/variance_coverage.py [--studies 400] [--resamples 500] [--levels 5,10,20]

Simulates head x data factorial studies (one run per cell) with known components
(head init sigma^2 = 4, data order 1, residual 0.5, in points^2), computes the 95%
bootstrap intervals of :func:`steadytune.analyses.variance.design_components` and prints
how often each component's interval holds its true value, per number of seeds per stream.
Not a test (tests/test_variance.py checks a short version); prints the numbers docs/sweeps.md quotes.
"""

from __future__ import annotations

import argparse

import numpy as np

from steadytune.analyses.variance import FactorialDesign, design_components

TRUTH = {"head_init": 4.0, "data_order": 1.0, "residual": 0.5}


def coverage(levels: int, studies: int, resamples: int, seed: int = 0) -> dict[str, float]:
    """Fraction of ``studies`` simulated levels x levels studies whose interval covers each true component."""
    rng = np.random.default_rng(seed)
    hits: dict[str, list[bool]] = {k: [] for k in TRUTH}
    for _ in range(studies):
        y = (rng.normal(0, TRUTH["head_init"] ** 0.5, (levels, 1, 1))
             + rng.normal(0, TRUTH["data_order"] ** 0.5, (1, levels, 1))
             + rng.normal(0, TRUTH["residual"] ** 0.5, (levels, levels, 1)))
        design = FactorialDesign(("head_init", "data_order"), (tuple(range(levels)),) * 2, y / 100)
        for row in design_components(design, resamples, 0.95, rng).itertuples():
            if row.component in TRUTH:
                hits[row.component].append(row.variance_ci_low <= TRUTH[row.component] <= row.variance_ci_high)
    return {k: float(np.mean(v)) for k, v in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=400)
    parser.add_argument("--resamples", type=int, default=500)
    parser.add_argument("--levels", default="5,10,20")
    args = parser.parse_args()
    print(f"coverage of the 95% intervals ({args.studies} simulated studies, {args.resamples} resamples each)")
    print("seeds per stream | " + " | ".join(TRUTH))
    for levels in (int(x) for x in args.levels.split(",")):
        cov = coverage(levels, args.studies, args.resamples)
        print(f"{levels} x {levels} | " + " | ".join(f"{100 * cov[k]:.0f}%" for k in TRUTH))


if __name__ == "__main__":
    main()
