"""Versioned on-disk artifacts shared by the stages (format spec: docs/artifacts.md)."""
