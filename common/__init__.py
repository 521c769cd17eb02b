"""The floor both sides of the wire stand on: the wire schema, image decoding, device selection, CLIP weights and
the configuration error. The vendor (`teacher_service`), the client (`cache`) and the trainer (`student`) import
from here; nothing here imports them."""
