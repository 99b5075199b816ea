"""reglab: config-driven experiments on regularization in deep learning."""

__version__ = "0.1.0"
