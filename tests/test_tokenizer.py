"""Tests of the teaching VLM's word-level tokenizer."""
from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from mmict_core.backbones.tokenizer import SPECIAL_TOKENS, UNK, build_word_tokenizer
from mmict_core.data import make_episode, task_names, vocabulary


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer(vocabulary())


@pytest.fixture(scope="module")
def texts():
    """Prompts and answers of 200+ generated examples, spread over every task."""
    out = []
    n_examples = 0
    names = task_names()
    for i in range(9):
        for name in names:
            ep = make_episode(name, 3, seed=11, index=i, pool_size=3)
            for ex in list(ep.demos) + [ep.query]:
                out.extend([ex.prompt, *ex.answers])
                n_examples += 1
    assert n_examples >= 200
    return out


def test_special_tokens_come_first(tok):
    assert SPECIAL_TOKENS == ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "<image>", "<eoc>", "<answer>")
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i
        assert tok.id_to_token(i) == t
    words = vocabulary()
    assert tok.get_vocab_size() == len(SPECIAL_TOKENS) + len(set(words))
    # ids of words follow the special tokens and are all distinct
    ids = [tok.token_to_id(w) for w in words]
    assert sorted(ids) == list(range(len(SPECIAL_TOKENS), len(SPECIAL_TOKENS) + len(words)))


def test_every_vocabulary_word_is_one_known_token(tok):
    unk = tok.token_to_id(UNK)
    for w in vocabulary():
        enc = tok.encode(w)
        assert enc.tokens == [w], w
        assert enc.ids == [tok.token_to_id(w)] and enc.ids[0] != unk, w
        assert tok.decode(enc.ids) == w


def test_generated_text_round_trips_without_unknowns(tok, texts):
    unk = tok.token_to_id(UNK)
    for text in texts:
        enc = tok.encode(text)
        assert unk not in enc.ids, (text, enc.tokens)
        assert enc.tokens == text.split(), text  # generated text is already one word per space
        assert tok.decode(enc.ids) == text


def test_operator_answers_are_single_tokens(tok):
    unk = tok.token_to_id(UNK)
    results = {a + b for a in range(10) for b in range(10)} | {a - b for a in range(10) for b in range(10)} \
        | {a * b for a in range(10) for b in range(10)}
    for r in results:
        enc = tok.encode(str(r))
        assert len(enc.ids) == 1 and enc.ids[0] != unk, r


def test_unknown_words_map_to_unk(tok):
    unk = tok.token_to_id(UNK)
    assert unk == 1
    enc = tok.encode("what is zebra ?")
    assert enc.tokens == ["what", "is", UNK, "?"]
    assert enc.ids[2] == unk and enc.ids.count(unk) == 1
    assert tok.encode("100").ids == [unk]  # outside the operator range -9..81


def test_pre_tokenization_rules(tok):
    assert tok.encode("-3").tokens == ["-3"]
    assert tok.encode("answer : -3").tokens == ["answer", ":", "-3"]
    assert tok.encode("left?").tokens == ["left", "?"]
    assert tok.encode("top left?").ids == tok.encode("top left ?").ids
    assert tok.encode("red,blue").tokens == ["red", UNK, "blue"]  # ',' is split off (and not in the vocabulary)
    assert tok.encode("What COLOUR Is").ids == tok.encode("what colour is").ids
    assert tok.encode("What COLOUR Is").tokens == ["what", "colour", "is"]
    assert tok.encode("  red \n\t circle  ").tokens == ["red", "circle"]


def test_saved_tokenizer_reloads_identically(tok, texts, tmp_path):
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    again = Tokenizer.from_file(str(path))
    assert again.get_vocab() == tok.get_vocab()
    probes = texts[:60] + ["What is ZEBRA?", "answer : -3", "<image> red <eoc>"]
    for text in probes:
        assert again.encode(text).ids == tok.encode(text).ids
        assert again.decode(tok.encode(text).ids) == tok.decode(tok.encode(text).ids)
    # special tokens are single tokens in both
    for t in SPECIAL_TOKENS:
        assert again.encode(t).ids == [SPECIAL_TOKENS.index(t)]
