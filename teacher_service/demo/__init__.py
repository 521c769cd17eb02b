"""The embedded demo: a procedural world and a small CLIP trained on it (`vl2v serve --model demo`)."""
