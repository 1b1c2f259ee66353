"""Unit tests: pure logic, no I/O."""
