"""The data layer: dataset layouts and their registry, class prompts, downloads, and the demo world."""
