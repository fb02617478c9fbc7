"""The configuration layer's error type."""


class ConfigError(ValueError):
    """An invalid configuration key or value; the message says what is valid."""
