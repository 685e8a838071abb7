"""Helpers and fixture builders shared by several test files (references: tests/reference)."""
