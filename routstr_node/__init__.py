"""routstr-node: sell OpenAI-compatible AI API access for Cashu ecash."""

__version__ = "0.1.0"
