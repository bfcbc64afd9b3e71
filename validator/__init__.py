"""rollproof validator: the window pipeline (fetch, verify with verification.verifier.Verifier,
score, write weights and the ledger) and its crash-safe journal."""
