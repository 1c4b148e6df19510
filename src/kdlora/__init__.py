"""kdlora: FFT vs LoRA vs KD-LoRA studies, trained, swept and analysed."""

__version__ = "0.1.0"
