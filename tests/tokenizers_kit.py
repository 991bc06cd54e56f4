"""Tiny real tokenizers of other families (byte-level BPE, unigram), trained in the test."""

from __future__ import annotations

from pathlib import Path

TEXT = [
    "the boundary layer over a flat plate in supersonic flow",
    "heat transfer to a cylinder in hypersonic flow with real gas effects",
    "information retrieval systems rank documents for a query",
    "Über naïve café – unicode text with accents and emoji 🚀",
    "numbers 1960 1234 and punctuation: commas, stops. dashes - and (brackets)",
] * 20


def roberta_style(path: Path) -> Path:
    """Byte-level BPE with ``<s> A </s></s> B </s>`` and no token type ids (RoBERTa)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
        cls_token="<s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
        model_input_names=["input_ids", "attention_mask"], model_max_length=128,
    )
    fast.save_pretrained(path)
    return path


def unigram_style(path: Path) -> Path:
    """SentencePiece-like unigram with ``[CLS] A [SEP] B [SEP]`` and type ids (DeBERTa-v3)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(TEXT, trainers.UnigramTrainer(vocab_size=300, special_tokens=specials,
                                                          unk_token="[UNK]"))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 1), ("[SEP]", 2)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
        unk_token="[UNK]", mask_token="[MASK]", model_max_length=128,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    fast.save_pretrained(path)
    return path


def tiny_roberta_model(path: Path, *, seed: int = 0) -> Path:
    """A tiny random RoBERTa cross-encoder with the byte-level BPE tokenizer."""
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaForSequenceClassification

    roberta_style(path)
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(seed)
    config = RobertaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=130, pad_token_id=1, type_vocab_size=1,
        num_labels=1,
    )
    RobertaForSequenceClassification(config).save_pretrained(path)
    return path
