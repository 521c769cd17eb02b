"""Write an open_clip ViT CLIP (config + safetensors, the `local-dir:` layout) as a Hugging Face CLIP folder, the
form infinity-emb and transformers serve, with the same weights. Runs in a Python that has `transformers` (the
peer's own virtual environment; vl2v does not depend on it):

    PEER/bin/python tools/hf_clip_folder.py common/demo/vl2v-demo OUT_DIR BPE_VOCAB_GZ

The mapping, tower by tower: the patch convolution, class and position embeddings, the pre- and post-norms and the
projection keep their roles; each residual block's fused attention projection (open_clip's `in_proj`, q, k and v
stacked) is split into `q_proj`, `k_proj` and `v_proj`, and its MLP `c_fc` / `c_proj` become `fc1` / `fc2`. The
text tower pools at the highest token id (CLIP's end of text), as open_clip does: HF's legacy `eos_token_id = 2`.
The tokenizer is CLIP's BPE built from the vocabulary file open_clip ships (`bpe_simple_vocab_16e6.txt.gz`); the
image processor resizes the shortest side and centre-crops to the model's size with CLIP's mean and std, as
open_clip's preprocessing does. The folder is checked by loading it back and comparing with the source weights.
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


def hf_config(cfg: dict):
    """The transformers CLIPConfig of an open_clip ViT config (GELU, LayerNorm eps 1e-5, MLP ratio 4)."""
    from transformers import CLIPConfig

    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    if vision.get("quick_gelu") or cfg.get("quick_gelu") or "timm_model_name" in vision:
        raise SystemExit("only open_clip's own ViT towers with GELU are mapped here")
    width = vision["width"]
    return CLIPConfig(
        projection_dim=cfg["embed_dim"],
        vision_config={
            "hidden_size": width, "intermediate_size": int(width * vision.get("mlp_ratio", 4.0)),
            "num_hidden_layers": vision["layers"], "num_attention_heads": width // vision.get("head_width", 64),
            "image_size": vision["image_size"], "patch_size": vision["patch_size"], "hidden_act": "gelu",
            "layer_norm_eps": 1e-5,
        },
        text_config={
            "hidden_size": text["width"], "intermediate_size": int(text["width"] * text.get("mlp_ratio", 4.0)),
            "num_hidden_layers": text["layers"], "num_attention_heads": text["heads"],
            "max_position_embeddings": text["context_length"], "vocab_size": text["vocab_size"],
            "hidden_act": "gelu", "layer_norm_eps": 1e-5, "eos_token_id": 2,  # pool at argmax(ids), as open_clip
        },
    )  # fmt: skip


def blocks(source: dict, prefix: str, target: str, layers: int) -> dict:
    """One tower's residual blocks, open_clip names to HF names, the fused q/k/v split in three."""
    out = {}
    for i in range(layers):
        a, b = f"{prefix}.resblocks.{i}", f"{target}.layers.{i}"
        q, k, v = source[f"{a}.attn.in_proj_weight"].chunk(3)
        qb, kb, vb = source[f"{a}.attn.in_proj_bias"].chunk(3)
        for name, weight, bias in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
            out[f"{b}.self_attn.{name}.weight"], out[f"{b}.self_attn.{name}.bias"] = weight, bias
        for old, new in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):  # fmt: skip
            for part in ("weight", "bias"):
                out[f"{b}.{new}.{part}"] = source[f"{a}.{old}.{part}"]
    return out


def hf_state_dict(source: dict, cfg: dict) -> dict:
    """The HF CLIPModel state dict holding the open_clip model's weights."""
    v, t = "vision_model", "text_model"
    state = {
        f"{v}.embeddings.patch_embedding.weight": source["visual.conv1.weight"],
        f"{v}.embeddings.class_embedding": source["visual.class_embedding"],
        f"{v}.embeddings.position_embedding.weight": source["visual.positional_embedding"],
        f"{v}.pre_layrnorm.weight": source["visual.ln_pre.weight"],
        f"{v}.pre_layrnorm.bias": source["visual.ln_pre.bias"],
        f"{v}.post_layernorm.weight": source["visual.ln_post.weight"],
        f"{v}.post_layernorm.bias": source["visual.ln_post.bias"],
        "visual_projection.weight": source["visual.proj"].T.contiguous(),
        f"{t}.embeddings.token_embedding.weight": source["token_embedding.weight"],
        f"{t}.embeddings.position_embedding.weight": source["positional_embedding"],
        f"{t}.final_layer_norm.weight": source["ln_final.weight"],
        f"{t}.final_layer_norm.bias": source["ln_final.bias"],
        "text_projection.weight": source["text_projection"].T.contiguous(),
        "logit_scale": source["logit_scale"],
    }  # fmt: skip
    state |= blocks(source, "visual.transformer", f"{v}.encoder", cfg["vision_cfg"]["layers"])
    state |= blocks(source, "transformer", f"{t}.encoder", cfg["text_cfg"]["layers"])
    return state


def main() -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    source_dir, out, bpe_gz = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    config = json.loads((source_dir / "open_clip_config.json").read_text())
    cfg, preprocess = config["model_cfg"], config.get("preprocess_cfg", {})
    source = load_file(str(source_dir / "open_clip_model.safetensors"))
    model = CLIPModel(hf_config(cfg)).eval()
    state = hf_state_dict(source, cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]  # a buffer, not a weight
    if missing or unexpected:
        raise SystemExit(f"weights not mapped: missing {missing}, unexpected {unexpected}")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    vocab_file, merges_file = write_tokenizer_files(bpe_gz, out)
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=cfg["text_cfg"]["context_length"])
    size = cfg["vision_cfg"]["image_size"]
    images = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, resample=3,  # bicubic
        image_mean=preprocess.get("mean"), image_std=preprocess.get("std"),
    )  # fmt: skip
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(out)
    reloaded = CLIPModel.from_pretrained(out).state_dict()
    for key, value in state.items():
        if not torch.equal(reloaded[key], value):
            raise SystemExit(f"{key} did not survive the round trip")
    print(out)


if __name__ == "__main__":
    main()
