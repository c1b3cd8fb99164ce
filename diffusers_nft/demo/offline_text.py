"""Offline text stacks for tiny pipelines: a byte-level BPE CLIP tokenizer and a unigram T5 tokenizer trained on a
small vocabulary, and tiny CLIP / T5 encoder configs. The demo's pipeline was built with them (`demo.build`), and
the tests' tiny pipelines use them too; nothing here downloads anything.

See `../shared/HF_NOTES.md` of the project for the traps they avoid (`CLIPTokenizer(vocab_file=...)` silently
builds a 2-token vocabulary; `T5TokenizerFast(vocab_file=...)` gives 4 tokens).
"""

import os

WORDS = (
    "a an the of in on with and photo picture drawing painting image render digit number "
    "red green blue yellow magenta cyan black white orange purple pink brown gray "
    "cat dog bird car house tree flower apple sky sea mountain city street person robot "
    "zero one two three four five six seven eight nine handwritten small large bright dark "
    "sign says text word letter poster 0 1 2 3 4 5 6 7 8 9"
).split()


def corpus():
    words = list(WORDS)
    return [" ".join(words[i : i + 7]) for i in range(0, len(words))] + words


def bytes_to_unicode():
    """CLIP's reversible byte -> printable character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def train_clip_tokenizer(folder, model_max_length: int = 77):
    """A deterministic byte-level BPE vocabulary: every byte, plus merges that spell each corpus word.

    `model_max_length` is the length every prompt is padded to: the text tokens of each sample of an SD3-style
    model, whatever its prompt.
    """
    import json

    from transformers import CLIPTokenizer

    alphabet = bytes_to_unicode()
    vocab = ["<|startoftext|>", "<|endoftext|>"] + alphabet + [c + "</w>" for c in alphabet]
    merges, known = [], set(vocab)
    for word in dict.fromkeys(WORDS):
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            merged = symbols[0] + symbols[1]
            if merged not in known:
                merges.append(f"{symbols[0]} {symbols[1]}")
                vocab.append(merged)
                known.add(merged)
            symbols = [merged] + symbols[2:]
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump({token: i for i, token in enumerate(vocab)}, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(folder, model_max_length=model_max_length)


def train_t5_tokenizer(folder, extra_text=()):
    """A unigram vocabulary of 100 pieces from `corpus()` and `extra_text` (lines): text that is in the corpus often
    gets whole-word pieces, and so fewer tokens."""
    import sentencepiece as spm
    from transformers import T5TokenizerFast

    corpus_file = os.path.join(folder, "corpus.txt")
    with open(corpus_file, "w") as f:
        f.write("\n".join(corpus() * 4 + list(extra_text)))
    spm.SentencePieceTrainer.train(
        input=corpus_file,
        model_prefix=os.path.join(folder, "spiece"),
        vocab_size=100,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    os.remove(corpus_file)
    return T5TokenizerFast.from_pretrained(folder, extra_ids=0)


def tiny_text_stack(folder: str, t5_dim: int = 32, clip_length: int = 77, extra_text=()):
    """A CLIP tokenizer padding to `clip_length`, a T5 tokenizer (trained on `extra_text` too) and a tiny T5
    encoder."""
    from transformers import T5Config, T5EncoderModel

    clip_dir, t5_dir = os.path.join(folder, "clip"), os.path.join(folder, "t5")
    os.makedirs(clip_dir)
    os.makedirs(t5_dir)
    tokenizer = train_clip_tokenizer(clip_dir, clip_length)
    t5_tokenizer = train_t5_tokenizer(t5_dir, extra_text)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer), d_model=t5_dim, d_ff=64, d_kv=8, num_layers=1, num_heads=4,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )
    ).eval()
    return tokenizer, t5_tokenizer, t5


def tiny_clip_config(tokenizer, hidden: int = 16):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=16,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
