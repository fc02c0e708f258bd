"""llama.cpp GGUF files of the Llama family -> formerkit: config, dequantized weights and the
tokenizer, all read from the one file (the GGUF format of ggml/llama.cpp, read with the ``gguf``
package).

Tensor names go GGUF -> HuggingFace through the ``gguf`` package's own ``TensorNameMap`` (the
table llama.cpp's converter writes them with), then HuggingFace -> formerkit through
``interop.hf_llama``, so no third name table exists. llama.cpp permutes the rows of the q and k
projections of the ``llama`` architecture (its rotary pairs neighbouring features, HF pairs
the two halves); that permutation is undone here exactly as transformers undoes it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from formerkit.interop.hf import StateDict
from formerkit.interop.hf_llama import state_dict_from_hf, state_dict_to_hf
from formerkit.models.base import CheckpointFormat, load_state_dict_into
from formerkit.nn.rotary import inverse_frequencies

if TYPE_CHECKING:
    from formerkit.models.base import PreTrainedModel

GGUF_SUFFIX = ".gguf"
ROPE_FREQS = "rope_freqs.weight"  # llama.cpp's per-frequency divisors (Llama 3.1 rope scaling)
ARCHITECTURES = ("llama", "qwen2")  # general.architecture values formerkit loads
_MISSING = object()


def is_gguf_file(path: str | Path) -> bool:
    """Whether ``path`` names a GGUF file (by its ``.gguf`` suffix)."""
    return Path(path).suffix.lower() == GGUF_SUFFIX


def import_gguf() -> Any:
    """The ``gguf`` package, or a one-line error saying how to install it."""
    try:
        import gguf
    except ImportError:
        raise ModuleNotFoundError("reading GGUF files needs the gguf package: "
                                  "pip install formerkit[gguf]") from None
    return gguf


class GGUFFile:
    """One GGUF file opened for reading: its metadata as Python values and its tensors.

    Attributes:
        path: the file.
        metadata: key -> value (str, int, float, bool, or a list of those).
        tensors: name -> the ``gguf`` reader's tensor (raw, possibly quantized, data).
    """

    def __init__(self, path: str | Path) -> None:
        gguf = import_gguf()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"GGUF file {self.path} does not exist")
        try:
            reader = gguf.GGUFReader(str(self.path))
        except Exception as err:  # the reader raises ValueError, struct.error, IndexError...
            raise ValueError(f"cannot read GGUF file {self.path}: {err} "
                             "(truncated or not a GGUF file?)") from None
        self.metadata = {key: _field_value(field, gguf.GGUFValueType)
                         for key, field in reader.fields.items()}
        self.tensors = {tensor.name: tensor for tensor in reader.tensors}

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if arch not in ARCHITECTURES:
            raise ValueError(f"{self.path}: GGUF architecture {arch!r} is not supported; "
                             f"formerkit loads: {', '.join(ARCHITECTURES)}")
        return arch

    def key(self, name: str, default: Any = _MISSING) -> Any:
        """``{architecture}.{name}``; without a default a missing key is an error."""
        full = f"{self.architecture}.{name}"
        value = self.metadata.get(full, default)
        if value is _MISSING:
            raise ValueError(f"{self.path} lacks the GGUF metadata key {full!r}")
        if isinstance(value, list) and name.startswith(("attention.head_count",
                                                         "feed_forward_length")):
            if len(set(value)) != 1:  # per-layer values: a layout the Llama family has not
                raise ValueError(f"{self.path}: {full} differs between layers ({value}); "
                                 "formerkit's Llama family needs one value")
            value = value[0]
        return value


def _field_value(field: Any, types: Any) -> Any:
    """A reader field's value (works with every ``gguf`` >= 0.10: no ``contents()`` needed)."""
    if not field.types:
        return None
    main = field.types[0]
    if main == types.ARRAY:
        kind = field.types[-1]
        return [item for index in field.data for item in _scalars(field.parts[index], kind, types)]
    return _scalars(field.parts[field.data[0]], main, types)[0]


def _scalars(part: np.ndarray, kind: Any, types: Any) -> list[Any]:
    if kind == types.STRING:
        return [bytes(part).decode("utf-8", errors="replace")]
    if kind == types.BOOL:
        return [bool(v) for v in part.tolist()]
    return part.tolist()  # ints and floats as Python numbers


# ---- config -------------------------------------------------------------------------------
def config_from_gguf(file: GGUFFile) -> dict[str, Any]:
    """GGUF metadata -> ``formerkit.LlamaConfig`` fields (keys as transformers maps them)."""
    arch = file.architecture
    name = str(file.metadata.get("general.name") or "")
    n_heads = file.key("attention.head_count")
    query = file.tensors.get("blk.0.attn_q.weight")  # GGML shape (D, H * K)
    head_dim = file.key("attention.key_length", None) or \
        (int(query.shape[-1]) // n_heads if query is not None else None)
    rotary = file.key("rope.dimension_count", None)
    if head_dim is not None and rotary is not None and rotary != head_dim:
        raise ValueError(f"{file.path}: rope.dimension_count={rotary} rotates part of each "
                         f"head (head width {head_dim}); the Llama family rotates it whole")
    names = set(file.tensors)
    theta = float(file.key("rope.freq_base", 10000.0))
    scaling = _rope_scaling(file)
    if scaling is None and ROPE_FREQS in names:
        scaling = llama3_scaling_from_factors(file, head_dim or rotary or
                                              file.key("embedding_length") // n_heads, theta)
    tokens = file.metadata.get("tokenizer.ggml.tokens")
    vocab = file.key("vocab_size", None)
    if vocab is None and "token_embd.weight" in names:
        vocab = int(file.tensors["token_embd.weight"].shape[-1])  # GGML order: (D, V)
    vocab = vocab or (len(tokens) if tokens else None)
    values: dict[str, Any] = dict(
        vocab_size=vocab, d_model=file.key("embedding_length"), n_heads=n_heads,
        n_kv_heads=file.key("attention.head_count_kv", n_heads),
        n_layers=file.key("block_count"), d_ff=file.key("feed_forward_length"),
        head_dim=head_dim or rotary, max_seq_len=file.key("context_length", 2048),
        rms_norm_eps=float(file.key("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=theta, rope_scaling=scaling,
        tie_embeddings="output.weight" not in names, activation="silu",
        bos_token_id=file.metadata.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=file.metadata.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=file.metadata.get("tokenizer.ggml.padding_token_id"),
    )
    if arch == "qwen2":
        values.update(architecture="qwen2", qkv_bias=True, out_bias=False, mlp_bias=False)
    else:
        # llama.cpp keeps Mistral in the llama architecture; its name tells them apart
        values.update(architecture="mistral" if "mistral" in name.lower() else "llama",
                      qkv_bias="blk.0.attn_q.bias" in names,
                      out_bias="blk.0.attn_output.bias" in names,
                      mlp_bias="blk.0.ffn_up.bias" in names,
                      sliding_window=file.key("attention.sliding_window", None) or None)
    return values


def _rope_scaling(file: GGUFFile) -> dict[str, Any] | None:
    kind = file.key("rope.scaling.type", None)
    factor = file.key("rope.scaling.factor", None)
    legacy = file.key("rope.scale_linear", None)  # files written before rope.scaling.*
    if kind is None and legacy not in (None, 1.0):
        kind, factor = "linear", legacy
    if kind in (None, "none"):
        return None
    if kind != "linear":
        raise ValueError(f"{file.path}: GGUF rope scaling type {kind!r} is not supported; "
                         "supported: none, linear")
    scaling: dict[str, Any] = {"rope_type": "linear", "factor": float(factor or 1.0)}
    original = file.key("rope.scaling.original_context_length", None)
    if original:
        scaling["original_max_position_embeddings"] = int(original)
    return scaling


def llama3_scaling_from_factors(file: GGUFFile, head_dim: int, theta: float
                                ) -> dict[str, Any] | None:
    """HF's ``llama3`` rope scaling recovered from ``rope_freqs.weight``, all llama.cpp keeps
    of it: per rotary pair, the divisor of its frequency (1 for short wavelengths, ``factor``
    for long ones, interpolated between). Only the two wavelength bounds matter, so the
    context is fixed and the bounds set the low/high factors. Checked by recomputing the
    divisors: anything else is an error rather than a silently different model."""
    factors = torch.from_numpy(dequantize(file, ROPE_FREQS)).double().flatten()
    base = inverse_frequencies(head_dim, theta).double()
    if factors.shape != base.shape:
        raise ValueError(f"{file.path}: {ROPE_FREQS} has {factors.numel()} values, the rotary "
                         f"embedding {base.numel()} frequencies")
    factor = float(factors.max())
    if torch.allclose(factors, torch.ones_like(factors)):
        return None
    wavelength = 2 * math.pi / base
    tol = 1e-4 * factor
    kept, slowed = factors <= 1 + tol, factors >= factor - tol
    band = ~kept & ~slowed
    # in the band 1/divisor = (1 - s)/factor + s, with s linear in 1/wavelength
    s = (1 / factors[band] - 1 / factor) / (1 - 1 / factor)
    below = float(wavelength[kept].max()) if kept.any() else float(wavelength.min()) / 2
    above = float(wavelength[slowed].min()) if slowed.any() else float(wavelength.max()) * 2
    if int(band.sum()) >= 2:
        slope, intercept = np.polyfit((1 / wavelength[band]).numpy(), s.numpy(), 1)
        inv_low, inv_high = -intercept / slope, (1 - intercept) / slope  # s = 0 and s = 1
    elif int(band.sum()) == 1:
        w0, s0 = float(wavelength[band][0]), float(s[0])
        high = math.sqrt(below * w0)
        inv_high, inv_low = 1 / high, (1 / w0 - s0 / high) / (1 - s0)
    else:
        middle = math.sqrt(below * above)
        inv_high, inv_low = 1 / middle, 1 / (middle * (1 + 1e-3))
    context = int(file.key("rope.scaling.original_context_length", 8192))
    scaling = {"rope_type": "llama3", "factor": factor,
               "low_freq_factor": float(context * inv_low),
               "high_freq_factor": float(context * inv_high),
               "original_max_position_embeddings": context}
    recovered = base / inverse_frequencies(head_dim, theta, scaling).double()
    if not torch.allclose(recovered, factors, rtol=1e-3, atol=0):
        raise ValueError(f"{file.path}: {ROPE_FREQS} holds frequency factors that are not "
                         "Llama 3 rope scaling, which formerkit cannot apply")
    return scaling


# ---- weights ------------------------------------------------------------------------------
def dequantize(file: GGUFFile, name: str) -> np.ndarray:
    """Tensor ``name`` as float32 in PyTorch's (row-major, reversed GGML) shape."""
    gguf = import_gguf()
    tensor = file.tensors[name]
    try:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError:
        raise ValueError(f"{file.path}: tensor {name!r} has GGUF quantization type "
                         f"{tensor.tensor_type.name}, which gguf cannot dequantize") from None
    shape = tuple(int(n) for n in reversed(tensor.shape))
    return np.array(values, dtype=np.float32).reshape(shape)  # a copy: the file is memory-mapped


def unpermute_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (``LlamaModel.permute`` in convert_hf_to_gguf.py):
    per head, rows (pair, 2) back to (2, pair), i.e. interleaved rotary pairs to halves."""
    pair = weight.shape[0] // n_heads // 2
    return weight.reshape(n_heads, pair, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)  # (H, 2, K/2, ...) -> rows


def hf_state_dict(file: GGUFFile, config: Any, hf_names: list[str]) -> StateDict:
    """The file's tensors under HuggingFace names (``model.layers.0.self_attn.q_proj.weight``).

    ``hf_names`` are the names a HuggingFace checkpoint of the model would have; tensors the
    gguf name table does not map keep their GGUF names, so the strict loader names them.
    """
    gguf = import_gguf()
    arch = file.architecture
    table = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), config.n_layers)
    to_hf = {}
    for hf_name in hf_names:
        gguf_name = table.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is not None:
            to_hf[gguf_name] = hf_name
    state: StateDict = {}
    for name in file.tensors:
        if name == ROPE_FREQS:
            continue  # read into the config's rope scaling
        weight = dequantize(file, name)
        if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
            weight = unpermute_rows(weight, config.n_heads if ".attn_q." in name
                                    else config.n_kv_heads)
        state[to_hf.get(name, name)] = torch.from_numpy(weight)
    return state


# ---- loading ------------------------------------------------------------------------------
def load_gguf(cls: type[PreTrainedModel], path: str | Path,
              overrides: dict[str, Any] | None = None) -> PreTrainedModel:
    """Build ``cls`` (``LlamaForCausalLM`` or ``LlamaModel``) from a GGUF file: config, fp32
    weights dequantized from any type ``gguf`` handles, tokenizer and generation config.

    ``overrides`` replace config fields that do not change weight shapes (``max_seq_len``,
    ``dropout``, ``backend``).
    """
    from formerkit.interop.gguf_tokenizer import tokenizer_from_gguf
    from formerkit.models.llama import LlamaForCausalLM, LlamaModel

    file = GGUFFile(path)
    if not issubclass(cls, (LlamaForCausalLM, LlamaModel)):
        raise ValueError(f"{file.path} holds a {file.metadata.get('general.architecture')!r} "
                         f"causal language model, which cannot be loaded as {cls.__name__}; "
                         "use LlamaForCausalLM or LlamaModel")
    values = config_from_gguf(file)
    values.update(overrides or {})
    config = cls.config_class.from_dict(values)
    model = cls(config)
    kind = "LlamaModel" if issubclass(cls, LlamaModel) else "LlamaForCausalLM"
    # the names of the causal LM's HF checkpoint ("model." prefix, and the LM head for the
    # file's output.weight, which state_dict_from_hf drops for the bare backbone)
    hf_names = {name if name.startswith(("model.", "lm_head.")) else "model." + name
                for name in state_dict_to_hf(model.state_dict(), config, kind)}
    hf_names.add("lm_head.weight")
    state = state_dict_from_hf(hf_state_dict(file, config, sorted(hf_names)), config, kind)
    load_state_dict_into(model, state, source=file.path)
    model.tokenizer = tokenizer_from_gguf(file)
    ids = {k: getattr(config, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")
           if getattr(config, k) is not None}
    model.generation_config = {**(model.generation_config or {}), **ids} or None
    model.eval()
    return model


FORMAT = CheckpointFormat(
    name="gguf",
    claims=lambda path, raw_config: raw_config is None and is_gguf_file(path),
    class_name=lambda path, raw_config: "LlamaForCausalLM",  # every family it reads is an LM
    load=lambda cls, path, raw_config, overrides: load_gguf(cls, path, overrides),
)
