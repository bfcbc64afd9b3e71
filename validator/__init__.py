"""rollproof validator (window loop, scoring and weight writing are being built; the verification
pipeline it runs is verification.verifier.Verifier)."""
