"""entraide: the level-0 chat assistant of an ENT support structure."""

__version__ = "0.1.0"
