"""finadapt: adapt small language models to finance on Ray."""
__version__ = "0.1.0"
