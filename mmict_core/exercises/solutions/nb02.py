"""Worked solutions of notebook 02's exercises (see mmict_core.exercises.solutions)."""
from __future__ import annotations


def mhub_features(states, num_query, text_mask, is_query):
    # states: (Q + L, d_q) Q-Former outputs over [query tokens ; text]; text_mask: (L,) 1 = real token
    if is_query:
        return states[:num_query]  # (Q, d_q) instruction-guided visual features
    text = states[num_query:]  # (L, d_q) the text-token outputs, pads included
    return text[text_mask.bool()]  # (L_real, d_q) visual-guided textual features


def mmict_layout(plain):
    # plain: [(role, item), ...] of the interleaved k-shot input; the query is the largest item
    k = max(item for _, item in plain)
    out = [seg for seg in plain if seg[1] == -1]  # the BOS
    for i in range(k):
        out += [("mhub_text", i), ("sep", i)]  # one fused M-Hub feature per demo, then <eoc>
    out += [seg for seg in plain if seg[1] == k]  # the query's prompt, image tokens, marker, answer
    return out
