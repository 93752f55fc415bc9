"""Helpers shared by the test suite: real ecash from nutshell's own wallet."""
