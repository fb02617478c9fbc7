"""steadytune: stable, diagnosable fine-tuning of BERT-family encoders.

    >>> import steadytune
    >>> result = steadytune.run(task="rte", recipe="mosbach2021", seed=1, train_limit=256)
    >>> result.metrics["final"]["acc"], result.failed
"""

__version__ = "0.1.0"

__all__ = ["run", "__version__"]


def __getattr__(name: str):
    # Imported on first use, so `steadytune --help` and sweep planning stay fast.
    if name == "run":
        from steadytune.training.runner import run

        return run
    raise AttributeError(f"module 'steadytune' has no attribute {name!r}")
