"""steadytune: stable, diagnosable fine-tuning of BERT-family encoders."""

__version__ = "0.1.0"
