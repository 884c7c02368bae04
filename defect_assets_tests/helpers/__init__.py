"""Helpers shared by several test modules (no tests here); test modules import from here, never from
another test module."""
