"""The training loop, evaluation and efficiency measurements."""
