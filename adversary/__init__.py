"""Cheating miners and attack helpers: what the attack suite (scripts/attacks.py) and the local
network's cheaters use. Not part of any honest role."""
