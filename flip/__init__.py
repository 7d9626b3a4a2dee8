"""flip: federated learning with informed pruning (AutoFLIP, arXiv 2405.10271) and its baselines."""

__version__ = "0.1.0"
