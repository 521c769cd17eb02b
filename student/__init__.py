"""Offline distillation: datasets, students, methods, trainer and evaluation."""
