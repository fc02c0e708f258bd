"""GGUF import: tiny random transformers models written as llama.cpp GGUF files with the gguf
package's writer (q/k permuted as llama.cpp's convert_hf_to_gguf.py does), loaded by formerkit
and compared with transformers' own GGUF loading of the same file."""

from __future__ import annotations

import json
import sys
from functools import lru_cache

import numpy as np
import pytest
import torch

import formerkit
from formerkit.cli import main as cli_main
from formerkit.models.auto import model_class_for
from formerkit.models.llama import LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
Q = gguf.GGMLQuantizationType
TEXT = ["Hello world, this is a tiny corpus.", "The quick brown fox jumps over the lazy dog.",
        "Tokenizers split text into pieces; GGUF stores them as metadata.",
        "naïve café 1234567 don't", "  indented\n\tlines\n"] * 10
STRINGS = ["Hello world, naïve 123", " leading space  and  double", "日本語 🙂 don't\n\tx",
           "<s>tokens</s> <|endoftext|> inline"]


@pytest.fixture
def accelerate():
    """transformers loads GGUF files only with accelerate installed."""
    return pytest.importorskip("accelerate")


# ---- writing GGUF files ---------------------------------------------------------------------
@lru_cache
def byte_level_vocab() -> tuple[list[str], list[str], list[int]]:
    """(tokens, merges, token types) of a small byte-level BPE, ``<|endoftext|>`` first."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.train_from_iterator(TEXT, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model = json.loads(backend.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    return tokens, merges, [3 if t == "<|endoftext|>" else 1 for t in tokens]


@lru_cache
def sentencepiece_vocab() -> tuple[list[str], list[float], list[int]]:
    """(tokens, scores, token types) laid out as llama.cpp writes a Llama vocabulary:
    ``<unk> <s> </s>``, the 256 byte tokens ``<0x00>``.., then ``▁`` pieces, best first."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=200, show_progress=False))
    pieces = [t for t, _ in sorted(backend.get_vocab().items(), key=lambda item: item[1])]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    return tokens, scores, [2, 3, 3] + [6] * 256 + [1] * len(pieces)


def llamacpp_permute(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute``: rotary halves to interleaved pairs, per head."""
    return weight.reshape(n_heads, 2, weight.shape[0] // n_heads // 2, *weight.shape[1:]) \
        .swapaxes(1, 2).reshape(weight.shape)


def random_kquant(rows: int, cols: int, qtype, rng: np.random.Generator) -> np.ndarray:
    """Valid K-quant blocks (gguf cannot quantize these): random bytes, sane fp16 scales."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    scale = np.frombuffer(np.float16(0.004).tobytes(), dtype=np.uint8)
    at = {Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (size - 2,)}[qtype]
    for offset in at:
        data[..., offset:offset + 2] = scale
    return data.reshape(rows, -1)


def write_gguf(path, model, arch: str = "llama", tokenizer: str = "llama", qtype=Q.F32, *,
               name: str = "tiny", pre: str = "llama-bpe", head_dim: int | None = None,
               extra=None, int8: tuple[str, ...] = ()) -> None:
    """Write ``model`` (a transformers causal LM) as llama.cpp's converter would."""
    c = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(head_dim or c.hidden_size // c.num_attention_heads)
    if tokenizer == "gpt2":
        tokens, merges, types = byte_level_vocab()
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_merges(merges)
        writer.add_token_types(types)
        writer.add_bos_token_id(0)
        writer.add_eos_token_id(0)
        writer.add_add_bos_token(arch == "llama")  # Llama 3 files ask for a bos
    else:
        tokens, scores, types = sentencepiece_vocab()
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_unk_token_id(0)
    if extra is not None:
        extra(writer)
    table = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()),
                                     c.num_hidden_layers)
    rng = np.random.default_rng(0)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        data = tensor.detach().float().numpy()
        if arch == "llama" and ".q_proj." in hf_name:
            data = llamacpp_permute(data, c.num_attention_heads)
        if arch == "llama" and ".k_proj." in hf_name:
            data = llamacpp_permute(data, c.num_key_value_heads)
        gguf_name = table.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name in int8:
            writer.add_tensor(gguf_name, np.zeros(data.shape, dtype=np.int8))
        elif data.ndim == 1 or qtype == Q.F32:
            writer.add_tensor(gguf_name, data.astype(np.float32))
        elif qtype == Q.F16:
            writer.add_tensor(gguf_name, data.astype(np.float16))
        elif qtype in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
            if data.shape[1] % 256:  # K-quant rows need 256-wide blocks; the rest stays F16
                writer.add_tensor(gguf_name, data.astype(np.float16))
            else:
                writer.add_tensor(gguf_name, random_kquant(*data.shape, qtype, rng),
                                  raw_dtype=qtype)
        else:
            writer.add_tensor(gguf_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def hf_model(arch: str = "llama", tokenizer: str = "llama", seed: int = 0, **extra):
    """A tiny random transformers model whose vocabulary is the GGUF tokenizer's."""
    vocab = len((sentencepiece_vocab() if tokenizer == "llama" else byte_level_vocab())[0])
    options = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=False,
                   initializer_range=0.1, bos_token_id=None, eos_token_id=None)
    options.update(extra)
    config = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
              "mistral": transformers.MistralConfig}[arch](**options)
    torch.manual_seed(seed)
    cls = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM,
           "mistral": transformers.MistralForCausalLM}[arch]
    model = cls(config).eval()
    with torch.no_grad():  # non-trivial norms, so a misplaced norm weight would show
        for param_name, param in model.named_parameters():
            if "norm" in param_name:
                param.uniform_(0.5, 1.5)
    return model


def hf_gguf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def ids_for(model, seed: int = 0, shape=(2, 12)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, model.config.vocab_size, shape, generator=gen)


# ---- parity with transformers' GGUF loading ---------------------------------------------------
CASES = {  # name: (arch, tokenizer, qtype, model options, write options)
    "llama-f32": ("llama", "llama", Q.F32, {}, {}),
    "llama-f16-tied": ("llama", "llama", Q.F16, dict(tie_word_embeddings=True), {}),
    "llama-bf16": ("llama", "gpt2", Q.BF16, {}, {}),
    "llama-q8_0": ("llama", "llama", Q.Q8_0, {}, {}),
    "llama-q4_0-mqa": ("llama", "gpt2", Q.Q4_0, dict(num_key_value_heads=1), {}),
    "llama-q4_1": ("llama", "llama", Q.Q4_1, {}, {}),
    "llama-q4_k": ("llama", "llama", Q.Q4_K, dict(intermediate_size=256), {}),
    "llama-q6_k": ("llama", "gpt2", Q.Q6_K, dict(intermediate_size=256), {}),
    "llama-head-dim": ("llama", "llama", Q.Q8_0, dict(head_dim=32), dict(head_dim=32)),
    "mistral-name": ("llama", "llama", Q.F16, {}, dict(name="Mistral-tiny-v0.1")),
    "qwen2-bf16-tied": ("qwen2", "gpt2", Q.BF16, dict(tie_word_embeddings=True),
                        dict(pre="qwen2")),
    "qwen2-q8_0": ("qwen2", "gpt2", Q.Q8_0, {}, dict(pre="qwen2")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers_gguf_loading(tmp_path, accelerate, case):
    arch, tokenizer, qtype, options, write_options = CASES[case]
    source = hf_model(arch, tokenizer, **options)
    file = tmp_path / f"{case}.gguf"
    write_gguf(file, source, arch, tokenizer, qtype, **write_options)
    ours = formerkit.from_pretrained(file)
    reference = hf_gguf(file)
    assert isinstance(ours, LlamaForCausalLM)
    assert ours.config.tie_embeddings == options.get("tie_word_embeddings", False)
    ids = ids_for(ours)
    with torch.no_grad():
        expected = reference(ids).logits
        got = ours(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    if qtype == Q.F32:  # and an unquantized file is the source model itself
        torch.testing.assert_close(got, source(ids).logits.detach(), atol=1e-4, rtol=0)


def test_dequantized_weights_equal_gguf_dequantize(tmp_path):
    source = hf_model()
    file = tmp_path / "q4.gguf"
    write_gguf(file, source, qtype=Q.Q4_0)
    ours = LlamaForCausalLM.from_pretrained(file)
    tensors = {t.name: t for t in gguf.GGUFReader(str(file)).tensors}

    def dequantized(name):
        t = tensors[name]
        return torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type)))

    layer = ours.model.encoder.layers[1]
    torch.testing.assert_close(layer.ff.down_proj.weight, dequantized("blk.1.ffn_down.weight"),
                               atol=0, rtol=0)
    torch.testing.assert_close(ours.lm_head.weight, dequantized("output.weight"), atol=0, rtol=0)
    # q and k come back in HF's row order: close to the source within Q4_0's error, and far
    # from it had the llama.cpp permutation been left in place
    original = source.model.layers[1].self_attn.k_proj.weight.detach()
    error = (layer.self_attn.k_proj.weight - original).abs().max()
    permuted = torch.from_numpy(llamacpp_permute(original.numpy(), 2))
    assert error < 0.2 * (permuted - original).abs().max()
    torch.testing.assert_close(layer.self_attn.k_proj.weight, original, atol=0.05, rtol=0)


def test_greedy_generation_matches_transformers(tmp_path, accelerate):
    file = tmp_path / "q8.gguf"
    write_gguf(file, hf_model(), qtype=Q.Q8_0)
    ours, reference = formerkit.from_pretrained(file), hf_gguf(file)
    ids = ids_for(ours, shape=(2, 6))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padded
    ids[0, :2] = 0
    options = dict(max_new_tokens=10, do_sample=False, eos_token_id=2, pad_token_id=0)
    expected = reference.generate(ids, attention_mask=mask, **options)
    got = ours.generate(ids, attention_mask=mask, **options)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("arch,tokenizer,pre", [("llama", "llama", None),
                                                ("llama", "gpt2", "llama-bpe"),
                                                ("qwen2", "gpt2", "qwen2")])
def test_tokenizer_encodes_like_transformers(tmp_path, arch, tokenizer, pre):
    file = tmp_path / "tok.gguf"
    write_gguf(file, hf_model(arch, tokenizer, num_hidden_layers=1), arch, tokenizer,
               pre=pre or "default")
    ours = formerkit.from_pretrained(file).tokenizer
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=file.name)
    for text in STRINGS:
        expected = reference(text).input_ids
        assert ours.encode(text) == expected, text
        assert ours.decode(expected) == reference.decode(expected, skip_special_tokens=True)
    assert ours.vocab_size == len(reference)


def test_pre_tokenizer_splits_are_transformers_own():
    mapping = pytest.importorskip("transformers.integrations.gguf.gguf_tokenizer_mapping")
    from formerkit.interop.gguf_tokenizer import PRE_TOKENIZER_SPLITS

    for pre, split in PRE_TOKENIZER_SPLITS.items():
        assert mapping.GGUF_PRE_TOKENIZER_SPLITS[pre] == split, pre


def test_roles_and_generation_config_come_from_the_file(tmp_path):
    file = tmp_path / "roles.gguf"
    write_gguf(file, hf_model(), extra=lambda w: w.add_pad_token_id(0))
    model = formerkit.from_pretrained(file)
    assert model.generation_config == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    assert (model.tokenizer.bos_token_id, model.tokenizer.eos_token_id,
            model.tokenizer.pad_token_id) == (1, 2, 0)
    assert model.tokenizer.encode("Hello")[0] == 1  # llama vocabularies add bos by default


# ---- config read from the file --------------------------------------------------------------
def test_sliding_window_and_mistral_name(tmp_path):
    source = hf_model("mistral", sliding_window=4)
    file = tmp_path / "mistral.gguf"
    write_gguf(file, source, name="Mistral-Tiny", extra=lambda w: w.add_sliding_window(4))
    ours = formerkit.from_pretrained(file)
    assert (ours.config.architecture, ours.config.sliding_window) == ("mistral", 4)
    ids = ids_for(ours)  # 12 tokens: the window of 4 matters
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, source(ids).logits, atol=1e-4, rtol=0)


def test_linear_rope_scaling(tmp_path):
    # transformers' GGUF loader drops rope.scaling.* for llama; the source model is the oracle
    source = hf_model(rope_scaling={"rope_type": "linear", "factor": 4.0}, rope_theta=500.0)
    file = tmp_path / "linear.gguf"

    def scaling(writer):
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(4.0)

    write_gguf(file, source, extra=scaling)
    ours = formerkit.from_pretrained(file)
    assert ours.config.rope_scaling == {"rope_type": "linear", "factor": 4.0}
    assert ours.config.rope_theta == 500.0
    ids = ids_for(ours)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, source(ids).logits, atol=1e-4, rtol=0)


def test_backbone_and_round_trip_through_save_pretrained(tmp_path):
    source = hf_model()
    file = tmp_path / "m.gguf"
    write_gguf(file, source, qtype=Q.Q8_0)
    model = formerkit.from_pretrained(file)
    backbone = LlamaModel.from_pretrained(file)
    ids = ids_for(model)
    with torch.no_grad():
        torch.testing.assert_close(backbone(ids).last_hidden_state,
                                   model.model(ids).last_hidden_state, atol=0, rtol=0)
        saved = formerkit.from_pretrained(model.save_pretrained(tmp_path / "saved"))
        torch.testing.assert_close(saved(ids).logits, model(ids).logits, atol=0, rtol=0)
    assert saved.tokenizer.encode(STRINGS[0]) == model.tokenizer.encode(STRINGS[0])
    assert model_class_for(file) is LlamaForCausalLM


def test_cli_generates_from_a_gguf_file(tmp_path, capsys):
    file = tmp_path / "cli.gguf"
    write_gguf(file, hf_model(num_hidden_layers=1))
    status = cli_main(["generate", str(file), "--prompt", "Hello world", "--max-new-tokens",
                       "5", "--seed", "0"])
    assert status == 0
    assert capsys.readouterr().out.startswith("Hello world")


# ---- errors ---------------------------------------------------------------------------------
def test_unsupported_architecture_is_named(tmp_path):
    file = tmp_path / "falcon.gguf"
    writer = gguf.GGUFWriter(str(file), "falcon")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="GGUF architecture 'falcon' is not supported"):
        formerkit.from_pretrained(file)


def test_unsupported_quantization_type_is_named(tmp_path):
    file = tmp_path / "i8.gguf"  # gguf.quants.dequantize has no I8
    write_gguf(file, hf_model(num_hidden_layers=1), int8=("blk.0.ffn_down.weight",))
    with pytest.raises(ValueError, match="'blk.0.ffn_down.weight' has GGUF quantization "
                                         "type I8"):
        formerkit.from_pretrained(file)


def test_partial_rotary_is_named(tmp_path):
    file = tmp_path / "partial.gguf"  # rotary over 8 of the 16 features of a head
    write_gguf(file, hf_model(num_hidden_layers=1), head_dim=8)
    with pytest.raises(ValueError, match="rope.dimension_count=8 rotates part of each head"):
        formerkit.from_pretrained(file)


def test_unsupported_rope_scaling_is_named(tmp_path):
    file = tmp_path / "yarn.gguf"
    write_gguf(file, hf_model(num_hidden_layers=1), extra=lambda w: w.add_rope_scaling_type(
        gguf.RopeScalingType.YARN))
    with pytest.raises(ValueError, match="rope scaling type 'yarn' is not supported"):
        formerkit.from_pretrained(file)


def test_bad_files_and_classes(tmp_path):
    with pytest.raises(FileNotFoundError, match="GGUF file .*missing.gguf does not exist"):
        formerkit.from_pretrained(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ValueError, match="cannot read GGUF file"):
        formerkit.from_pretrained(junk)
    file = tmp_path / "m.gguf"
    write_gguf(file, hf_model(num_hidden_layers=1))
    with pytest.raises(ValueError, match="cannot be loaded as LlamaForSequenceClassification"):
        LlamaForSequenceClassification.from_pretrained(file)


def test_missing_gguf_package_says_how_to_install(tmp_path, monkeypatch):
    file = tmp_path / "m.gguf"
    write_gguf(file, hf_model(num_hidden_layers=1))
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf now raises ImportError
    with pytest.raises(ModuleNotFoundError, match=r"pip install formerkit\[gguf\]"):
        formerkit.from_pretrained(file)


def test_cli_errors_are_one_line(tmp_path, capsys):
    status = cli_main(["generate", str(tmp_path / "none.gguf"), "--prompt", "x"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "GGUF file" in err and "does not exist" in err


def llamacpp_rope_factors(head_dim: int, theta: float, scaling: dict) -> np.ndarray:
    """``rope_freqs.weight`` as llama.cpp's converter computes it for Llama 3.1 scaling."""
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    context = scaling["original_max_position_embeddings"]
    factors = []
    for freq in freqs:
        wavelength = 2 * np.pi / freq
        if wavelength < context / high:
            factors.append(1.0)
        elif wavelength > context / low:
            factors.append(factor)
        else:
            smooth = (context / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


@pytest.mark.parametrize("low,high,context", [(1.0, 4.0, 16), (1.0, 32.0, 512), (1.0, 1.5, 64)])
def test_llama3_rope_scaling_from_rope_freqs(tmp_path, low, high, context):
    # transformers' GGUF loader ignores rope_freqs.weight; the source model is the oracle
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": low,
               "high_freq_factor": high, "original_max_position_embeddings": context}
    source = hf_model(rope_scaling=scaling, rope_theta=50000.0)
    factors = llamacpp_rope_factors(16, 50000.0, scaling)
    file = tmp_path / "llama3.gguf"
    write_gguf(file, source, extra=lambda w: w.add_tensor("rope_freqs.weight", factors))
    ours = formerkit.from_pretrained(file)
    assert ours.config.rope_scaling["rope_type"] == "llama3"
    ids = ids_for(ours, shape=(1, 40))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, source(ids).logits, atol=1e-4, rtol=0)


def test_rope_freqs_that_are_not_llama3_scaling_are_an_error(tmp_path):
    file = tmp_path / "odd.gguf"
    odd = np.array([1.0, 3.0, 1.0, 2.0, 8.0, 1.0, 8.0, 4.0], dtype=np.float32)
    write_gguf(file, hf_model(num_hidden_layers=1),
               extra=lambda w: w.add_tensor("rope_freqs.weight", odd))
    with pytest.raises(ValueError, match="not Llama 3 rope scaling"):
        formerkit.from_pretrained(file)


def test_docs_snippets_run(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    guide = Path(__file__).resolve().parents[2] / "docs" / "gguf.md"
    monkeypatch.chdir(tmp_path)  # the guide's file names, written here
    write_gguf(tmp_path / "qwen2.5-0.5b-instruct-q8_0.gguf", hf_model("qwen2", "gpt2"),
               "qwen2", "gpt2", Q.Q8_0, pre="qwen2")
    write_gguf(tmp_path / "Llama-3.2-1B-Q4_K_M.gguf", hf_model(intermediate_size=256),
               qtype=Q.Q4_K)
    snippets = re.findall(r"```py\n(.*?)```", guide.read_text(), flags=re.S)
    assert len(snippets) == 2
    namespace: dict = {}
    for code in snippets:
        exec(code, namespace)
    assert (tmp_path / "qwen2.5-0.5b" / "tokenizer.json").is_file()
    assert (tmp_path / "qwen2.5-0.5b-hf" / "config.json").is_file()
