"""Segmentation metrics, summaries and tables."""
