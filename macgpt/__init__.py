"""macgpt: train tiny GPT models on a laptop without making it unresponsive."""

__version__ = "0.1.0"
