"""Write a Hugging Face CLIP ViT-B/32 folder with random weights, for the peer server. Runs in the peer's own
virtual environment (it needs `transformers`, which vl2v does not):

    /tmp/peer/bin/python bench/peer_model.py OUT_DIR BPE_VOCAB_GZ

The shapes are those of OpenAI's ViT-B/32 (`CLIPConfig()`'s defaults: 12 x 768 vision layers on 32 px patches at
224 px, 12 x 512 text layers, 512-d embeddings), as open_clip's `ViT-B-32`. The tokenizer is CLIP's BPE, built
from the vocabulary file open_clip ships (`bpe_simple_vocab_16e6.txt.gz`), so no hub is needed.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map of bytes to printable characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


def write_tokenizer_files(bpe_gz: Path, out: Path) -> tuple[Path, Path]:
    """vocab.json and merges.txt in CLIP's order: bytes, bytes + '</w>', the merges, then the two specials."""
    merges = gzip.decompress(bpe_gz.read_bytes()).decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    pairs = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab] + ["".join(p) for p in pairs] + ["<|startoftext|>", "<|endoftext|>"]
    vocab_file, merges_file = out / "vocab.json", out / "merges.txt"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p in pairs) + "\n")
    return vocab_file, merges_file


def main() -> None:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    out, bpe_gz = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig()).save_pretrained(out)
    vocab_file, merges_file = write_tokenizer_files(bpe_gz, out)
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file))
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(out)
    print(out)


if __name__ == "__main__":
    main()
