"""evoplat: population and evolutionary training of PyTorch networks on Ray."""

__version__ = "0.1.0"
