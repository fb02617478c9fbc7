"""Where steadytune meets the tools users already have: a Hugging Face ``Trainer`` callback and experiment trackers."""
