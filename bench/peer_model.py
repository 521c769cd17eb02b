"""Write a Hugging Face CLIP ViT-B/32 folder with random weights, for the peer server. Runs in the peer's own
virtual environment (it needs `transformers`, which vl2v does not):

    /tmp/peer/bin/python bench/peer_model.py OUT_DIR BPE_VOCAB_GZ

The shapes are those of OpenAI's ViT-B/32 (`CLIPConfig()`'s defaults: 12 x 768 vision layers on 32 px patches at
224 px, 12 x 512 text layers, 512-d embeddings), as open_clip's `ViT-B-32`. The tokenizer is CLIP's BPE, built
from the vocabulary file open_clip ships (`bpe_simple_vocab_16e6.txt.gz`), so no hub is needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from hf_clip_folder import write_tokenizer_files  # noqa: E402  (the tokenizer both folders use)


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
