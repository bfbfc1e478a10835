"""Small random checkpoints written by transformers itself, each with a tokenizer of its own
special-token names trained here with `tokenizers` (nothing downloaded): a Llama-3-style one
(llama3 rope scaling, BOS post-processor, Jinja chat template, bf16 weights, tied
embeddings, eos list), a Mistral one (<s> </s> <pad> <mask>, sharded files, a sliding
window of 12 that every test sequence outgrows) and a Qwen2 one
(attention biases, ChatML, mask token named only in tokenizer_config.json)."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

TEXT = ("the quick brown fox jumps over the lazy dog. def parse(args): return args\n"
        "import os\nclass Stack:\n    def push(self, x):\n        self.items.append(x)\n"
        "hello world, a tiny model for tests. user assistant system\n") * 4

LLAMA3_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- for message in messages %}\n"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unknown role: ' + message['role']) }}{% endif %}\n"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}\n"
    "{{- message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n")
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>", "<|reserved_special_token_0|>"]
MISTRAL_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<mask>"]
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]


def train_tokenizer(specials: list[str], vocab: int = 320, bos: str | None = None) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([TEXT], trainer=trainer)
    if bos is not None:  # Llama 3: the post-processor puts BOS first
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def _save_tokenizer(tok: Tokenizer, path: Path, template: str | None, **names: str) -> None:
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **names)
    if template is not None:
        fast.chat_template = template
    fast.save_pretrained(path)


def _save_model(model: torch.nn.Module, path: Path, dtype: torch.dtype, **kw: object) -> None:
    model.to(dtype).save_pretrained(path, **kw)


def llama3(path: Path) -> Path:
    tok = train_tokenizer(LLAMA3_SPECIALS, bos="<|begin_of_text|>")
    ids = {t: tok.token_to_id(t) for t in LLAMA3_SPECIALS}
    config = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=256, initializer_range=0.1, tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 32},
        bos_token_id=ids["<|begin_of_text|>"],
        eos_token_id=[ids["<|end_of_text|>"], ids["<|eot_id|>"]])
    config.mask_token_id = ids["<|reserved_special_token_0|>"]  # a tri-mode checkpoint's
    torch.manual_seed(0)
    _save_model(transformers.LlamaForCausalLM(config), path, torch.bfloat16)
    _save_tokenizer(tok, path, LLAMA3_TEMPLATE, bos_token="<|begin_of_text|>",
                    eos_token="<|eot_id|>")
    return path


def mistral(path: Path, sliding_window: int = 12) -> Path:
    tok = train_tokenizer(MISTRAL_SPECIALS)
    ids = {t: tok.token_to_id(t) for t in MISTRAL_SPECIALS}
    config = transformers.MistralConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=256, sliding_window=sliding_window, initializer_range=0.1,
        tie_word_embeddings=False, bos_token_id=ids["<s>"], eos_token_id=ids["</s>"],
        pad_token_id=ids["<pad>"])
    config.mask_token_id = ids["<mask>"]
    torch.manual_seed(1)
    # Sharded: model.safetensors.index.json and several files.
    _save_model(transformers.MistralForCausalLM(config), path, torch.float32,
                max_shard_size="100KB")
    _save_tokenizer(tok, path, LLAMA3_TEMPLATE.replace("<|start_header_id|>", "[").replace(
        "<|end_header_id|>", "]").replace("<|eot_id|>", "</s>"), bos_token="<s>",
        eos_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    return path


def qwen2(path: Path) -> Path:
    tok = train_tokenizer(QWEN2_SPECIALS)
    ids = {t: tok.token_to_id(t) for t in QWEN2_SPECIALS}
    config = transformers.Qwen2Config(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, initializer_range=0.1, tie_word_embeddings=False,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 64},
        eos_token_id=ids["<|im_end|>"], bos_token_id=None)
    torch.manual_seed(2)
    model = transformers.Qwen2ForCausalLM(config)
    with torch.no_grad():  # biases of zero would test nothing
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.5)
    _save_model(model, path, torch.float32)
    _save_tokenizer(tok, path, CHATML_TEMPLATE, eos_token="<|im_end|>",
                    pad_token="<|endoftext|>", mask_token="<|mask|>")
    return path


BUILDERS = {"llama3": llama3, "mistral": mistral, "qwen2": qwen2}
