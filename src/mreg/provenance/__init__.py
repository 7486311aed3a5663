"""Signed provenance: signing and trusted keys, DSSE envelopes, in-toto/SLSA statements and CycloneDX SBOMs.

Nothing here reads a store, an image registry or the environment: callers pass key paths, passphrases,
digests and times.
"""
