"""Techniques: each a short function over a ModelBundle and tensors, returning a small result dataclass."""
