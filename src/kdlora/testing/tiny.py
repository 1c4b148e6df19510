"""Tiny random models built from configs, saved like real checkpoints.

Tests, benchmarks and CI use these instead of hub weights: they are written to a directory with
a tokenizer and loaded back through exactly the code path that loads real models.
"""

from __future__ import annotations

from pathlib import Path

# Architecture -> (config class name, extra config kwargs). Sizes are kept tiny so a training
# step takes milliseconds on one CPU thread.
TINY_ARCHS = {
    "bert": ("BertConfig", {}),
    "roberta": ("RobertaConfig", {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}),
    "distilbert": ("DistilBertConfig", {}),
    "deberta-v2": ("DebertaV2Config", {"relative_attention": True, "position_buckets": 16,
                                       "pos_att_type": ["p2c", "c2p"]}),
}
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(path: Path, words: list[str]) -> Path:
    vocab = SPECIAL + sorted({w.lower() for w in words if w.strip()} - set(SPECIAL))
    path.write_text("\n".join(vocab) + "\n")
    return path


def build_tiny_model(arch: str, out_dir: str | Path, words: list[str], *, hidden: int = 32,
                     layers: int = 2, heads: int = 2, intermediate: int = 64,
                     num_labels: int = 2, seed: int = 0) -> Path:
    """Save a randomly initialised `arch` model and a word-level WordPiece tokenizer to out_dir."""
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, BertTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # transformers 5 tokenizers take the vocabulary itself (`vocab`); a `vocab_file` keyword is
    # silently ignored and would leave only the special tokens.
    vocab = write_vocab(out / "vocab.txt", words).read_text().split("\n")
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(v for v in vocab if v)}, do_lower_case=True)
    cls_name, extra = TINY_ARCHS[arch]
    sizes = ({"dim": hidden, "n_layers": layers, "n_heads": heads, "hidden_dim": intermediate}
             if arch == "distilbert" else
             {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
              "intermediate_size": intermediate})
    config = getattr(transformers, cls_name)(vocab_size=len(tok), max_position_embeddings=160,
                                             num_labels=num_labels, **sizes, **extra)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
