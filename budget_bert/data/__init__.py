"""Pretraining data: offline corpora, tokenizers (loading, WordPiece training), preparation into packed Arrow
shards, loading, and the masking collator.

Import the submodules by their full path (`from budget_bert.data.collator import ...`).
"""
