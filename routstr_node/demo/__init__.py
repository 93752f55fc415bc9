"""Local stand-ins for the outside world (a Cashu mint, an AI provider) for the demo and tests."""
