"""steadytune: stable, diagnosable fine-tuning of BERT-family encoders.

    >>> import steadytune
    >>> result = steadytune.run(task="rte", recipe="mosbach2021", seed=1, train_limit=256)
    >>> result.metrics["final"]["acc"], result.failed
"""

__version__ = "0.1.0"

from steadytune.api import run  # noqa: E402  (the one import users need at top level)

__all__ = ["run", "__version__"]
