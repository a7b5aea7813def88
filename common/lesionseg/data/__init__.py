"""Ultrasound data: phantoms, readers, splits and integrity checks."""
