"""Bundled data: the demo model and its images."""
