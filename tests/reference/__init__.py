"""Reference implementations for the tests, independent of the code they check."""
