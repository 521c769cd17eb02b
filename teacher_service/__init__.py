"""The teacher vendor: CLIP embeddings behind a keyed, billed, rate-limited HTTP API.

`create_app(settings)` in `teacher_service.app` builds the service; nothing loads at import.
"""
