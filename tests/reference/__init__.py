"""Deliberately plain reference implementations that fast code is tested against."""
