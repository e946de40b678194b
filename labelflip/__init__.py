"""labelflip: measure and reduce multi-label flips under small input perturbations."""

__version__ = "0.1.0"
