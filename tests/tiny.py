"""Tiny random models built from configs (no downloads) and a character tokenizer for fast tests."""

import torch
from transformers import AutoConfig, AutoModelForCausalLM

VOCAB = 96
_SMALL = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16)
FAMILY_CONFIGS = {
    "llama": _SMALL,
    "mistral": _SMALL,
    "qwen2": _SMALL,
    "qwen3": _SMALL,
    "gemma": _SMALL,
    "gemma2": _SMALL,
    # three layers so both sliding and full attention layers (different masks/rotary) appear
    "gemma3_text": dict(_SMALL, num_hidden_layers=3, sliding_window=8),
    "phi3": dict(_SMALL, pad_token_id=0, bos_token_id=1, eos_token_id=2),
    "opt": dict(vocab_size=VOCAB, hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                word_embed_proj_dim=64, pad_token_id=0, bos_token_id=1, eos_token_id=2),
    "gpt2": dict(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=2),
    "gpt_neox": dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, bos_token_id=1, eos_token_id=2),
}


def tiny_model(model_type: str = "llama", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    config = AutoConfig.for_model(model_type, **{**FAMILY_CONFIGS[model_type], **overrides})
    return AutoModelForCausalLM.from_config(config).eval()


def random_ids(nsamples: int = 6, seqlen: int = 24, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (nsamples, seqlen), generator=generator)


class CharTokenizer:
    """Maps characters to ids; enough of the tokenizer interface for data and eval code."""

    name_or_path = "char-tokenizer"
    pad_token_id = 0
    eos_token_id = 2

    def __len__(self):
        return VOCAB

    def __call__(self, texts, add_special_tokens=False, verbose=False):
        single = isinstance(texts, str)
        ids = [[3 + (ord(c) % (VOCAB - 3)) for c in t] for t in ([texts] if single else texts)]
        return {"input_ids": ids[0] if single else ids}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(32 + (int(i) - 3) % 95) if i >= 3 else "" for i in ids)


def char_tokenizer(add_bos: bool = False):
    """A character-level fast tokenizer (<pad>=0, <s>=1, </s>=2). With add_bos it puts <s> before every
    text when asked for special tokens, as Llama tokenizers do."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{chr(32 + i): 3 + i for i in range(VOCAB - 3)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def save_tiny_folder(path, model_type: str = "llama"):
    """A complete local model folder (weights + a character-level fast tokenizer), no downloads."""
    tiny_model(model_type).save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


def naive_block_by_block(model, ids, prune_block) -> None:
    """An independent reference of the layer-wise loop: for each block, full-model forwards (through the
    already pruned earlier blocks, one sample each) with hooks summing each Linear's squared inputs per
    feature, then `prune_block(modules, scaler)` with scaler = that sum / number of samples (Wanda's and
    RIA's `scaler_row`), in float64."""
    from calib_core.models import decoder_blocks, prunable_modules

    for block in decoder_blocks(model):
        modules = prunable_modules(block)
        sums = {name: 0.0 for name in modules}
        handles = [module.register_forward_hook(lambda mod, inp, out, name=name: sums.__setitem__(
            name, sums[name] + inp[0].reshape(-1, inp[0].shape[-1]).double().pow(2).sum(0)))
            for name, module in modules.items()]
        with torch.inference_mode():
            for row in ids:
                model(input_ids=row[None], use_cache=False)
        for handle in handles:
            handle.remove()
        with torch.inference_mode():
            prune_block(modules, {name: total / len(ids) for name, total in sums.items()})
