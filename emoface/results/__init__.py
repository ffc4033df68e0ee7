"""Answers in and out of the store: ``emoface results export`` (tidy tables + codebook for R,
SPSS, pandas) and ``emoface results import`` (answers produced elsewhere, mapped onto the
store's own batches so the analyses run on them with zero backend calls).

Both go through the store's own reader and writer (:mod:`emoface.inference.store`), the
project's parser (:mod:`emoface.parsing`), digit merge (:mod:`emoface.logits`) and pandera schemas
(:mod:`schemas`); nothing here keeps a second copy of any of them.
"""
