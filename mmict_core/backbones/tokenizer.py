"""The teaching VLM's word-level tokenizer, stored in the `tokenizers` library's JSON format."""
from __future__ import annotations

from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

PAD, UNK, BOS, EOS, IMAGE, SEP, ANSWER = "[PAD]", "[UNK]", "[BOS]", "[EOS]", "<image>", "<eoc>", "<answer>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS, IMAGE, SEP, ANSWER)


def build_word_tokenizer(words: Iterable[str]) -> Tokenizer:
    """Word-level tokenizer over ``words`` plus the special tokens (ids 0-6, in SPECIAL_TOKENS order).

    Text is lower-cased; words are split on white space, and punctuation is split off
    (a leading minus sign stays on a number: ``-3`` is one word).
    """
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in sorted(set(words) - set(SPECIAL_TOKENS)):
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(r"-?\d+|[^\w\s]"), behavior="isolated"),
    ])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok
