"""PreTrainedModel mixin (save/load in formerkit or HuggingFace layout) and output dataclasses.

Layouts other than formerkit's own (HuggingFace directories, llama.cpp GGUF files, a plugin's)
are ``CheckpointFormat``s that ``formerkit.interop`` (or the plugin) provides through the
``formerkit.checkpoint_formats`` entry point group: models never import the code that
converts them.

Loading checks before it allocates: the weights file must exist, its header must describe
tensors that lie inside the file, the config may not describe more parameters than the file
holds (``sizing.py``), and the model is first built with its parameters on the meta device so
that every shape is compared with the file's; only then are the file's tensors read and put
in place (``load_state_dict(assign=True)``), so memory stays near the checkpoint's size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from formerkit.config import ConfigBase

M = TypeVar("M", bound="PreTrainedModel")

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BIN_WEIGHTS_NAME = "pytorch_model.bin"
GENERATION_CONFIG_NAME = "generation_config.json"
StateDict = dict[str, torch.Tensor]
FORMAT_ENTRY_POINTS = "formerkit.checkpoint_formats"


@dataclasses.dataclass(frozen=True)
class CheckpointFormat:
    """A checkpoint layout other than formerkit's own.

    Attributes:
        name: how ``save_pretrained`` names it (``hf=True`` is ``"huggingface"``).
        claims: (path, its ``config.json`` contents, or ``None`` for a path that is not a
            directory) -> whether this format reads it.
        class_name: (path, config or ``None``) -> the formerkit class name it holds.
        load: (class, path, config or ``None``, config overrides) -> the loaded model.
        save: (model, directory) -> writes config and weights in this layout; ``None`` if the
            format is read-only.
    """

    name: str
    claims: Callable[[Path, dict[str, Any] | None], bool]
    class_name: Callable[[Path, dict[str, Any] | None], str]
    load: Callable[..., Any]
    save: Callable[[Any, Path], None] | None = None


_FORMATS: dict[str, CheckpointFormat] = {}
_formats_lock = threading.Lock()
_entry_points_loaded = False


def register_checkpoint_format(fmt: CheckpointFormat) -> CheckpointFormat:
    """Add a format (a plugin may also publish one in the ``formerkit.checkpoint_formats``
    entry point group, which is read on first use)."""
    _FORMATS[fmt.name] = fmt
    return fmt


def checkpoint_formats() -> list[CheckpointFormat]:
    """Every known format: registered ones and those the installed packages publish."""
    global _entry_points_loaded
    with _formats_lock:
        if not _entry_points_loaded:
            from importlib.metadata import entry_points

            for point in entry_points(group=FORMAT_ENTRY_POINTS):
                fmt = point.load()
                _FORMATS.setdefault(fmt.name, fmt)
            _entry_points_loaded = True
    return list(_FORMATS.values())


def get_checkpoint_format(name: str) -> CheckpointFormat:
    for fmt in checkpoint_formats():
        if fmt.name == name:
            return fmt
    raise ValueError(f"checkpoint format {name!r} is not installed (formats: "
                     f"{', '.join(f.name for f in checkpoint_formats()) or 'none'}; "
                     "reinstall formerkit if its own are missing)")


def checkpoint_format_for(path: Path, raw_config: dict[str, Any] | None
                          ) -> CheckpointFormat | None:
    """The format that reads ``path`` (a directory whose ``config.json`` is ``raw_config``,
    or, with ``raw_config=None``, a path that is not a directory), or ``None``."""
    return next((f for f in checkpoint_formats() if f.claims(path, raw_config)), None)


def foreign_format(path: Path, raw_config: dict[str, Any]) -> CheckpointFormat:
    """The format of a model directory whose ``config.json`` is not formerkit's."""
    fmt = checkpoint_format_for(path, raw_config)
    if fmt is None:
        raise ValueError(f"{path / CONFIG_NAME} is neither a formerkit config nor one an "
                         "installed checkpoint format reads")
    return fmt


@dataclasses.dataclass
class ModelOutput:
    """Fields named as in HuggingFace; unused ones stay ``None``."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    prediction_logits: torch.Tensor | None = None
    seq_relationship_logits: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    prediction: torch.Tensor | None = None
    past_key_values: Any = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    encoder_attentions: tuple[torch.Tensor, ...] | None = None

    # HuggingFace ModelOutput behaves as an ordered dict of its set (non-None) fields and as a
    # tuple of their values: out["loss"], out[0], out.to_tuple(), `"loss" in out`, dict(out).

    def keys(self) -> list[str]:
        """Names of the fields that are set, in declaration order."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list[Any]:
        return [getattr(self, name) for name in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(name, getattr(self, name)) for name in self.keys()]

    def to_tuple(self) -> tuple[Any, ...]:
        """The set fields' values in order (``out[0]`` is the first: ``loss`` with labels,
        else ``logits`` / ``last_hidden_state`` / ``prediction``)."""
        return tuple(self.values())

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None)
        return default if value is None else value

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        if not isinstance(key, str):
            raise TypeError(f"ModelOutput indices are field names, ints or slices, "
                            f"not {type(key).__name__}")
        if key not in self.keys():
            names = [f.name for f in dataclasses.fields(self)]
            state = "is not set (None)" if key in names else "is not a field"
            raise KeyError(f"{key!r} {state}; this output holds {self.keys()}")
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


class PreTrainedModel(nn.Module):
    """Base class of every formerkit model: config handling, save and load.

    Subclasses set ``config_class`` and take the config as their only ``__init__`` argument.
    ``registry_name`` is set by ``@register_model``. A model may carry a ``tokenizer`` (saved
    as ``tokenizer.json``) and a ``generation_config`` dict (saved as generation_config.json).
    """

    config_class: type[ConfigBase] = ConfigBase
    registry_name: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        from formerkit.models.registry import register_class

        register_class(cls)

    def __init__(self, config: ConfigBase) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        self.config = config
        self.tokenizer: Any = None
        self.generation_config: dict[str, Any] | None = None

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ---- conveniences known from HuggingFace ---------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the first parameter (or buffer); CPU for a model with neither."""
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the first floating-point parameter (or buffer)."""
        for tensor in (*self.parameters(), *self.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.get_default_dtype()

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding: the first ``nn.Embedding`` with ``config.vocab_size`` rows
        (registration order puts it before position and segment embeddings)."""
        vocab = getattr(self.config, "vocab_size", None)
        for module in self.modules():
            if isinstance(module, nn.Embedding) and module.num_embeddings == vocab:
                return module
        raise ValueError(f"{type(self).__name__} has no token embedding (it takes no "
                         "input_ids)")

    def set_input_embeddings(self, embedding: nn.Embedding) -> None:
        """Put ``embedding`` everywhere the current token embedding is used (a shared
        encoder/decoder embedding stays shared); tied output layers are not changed."""
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"embedding must be an nn.Embedding, got {type(embedding).__name__}")
        old = self.get_input_embeddings()
        if embedding.embedding_dim != old.embedding_dim:
            raise ValueError(f"embedding has width {embedding.embedding_dim}, the model "
                             f"expects {old.embedding_dim}")
        _replace_module(self, old, embedding)

    def get_output_embeddings(self) -> nn.Module | None:
        """The output projection onto the vocabulary (``lm_head``, BERT's MLM decoder), or
        ``None`` for a model without one."""
        head = getattr(self, "lm_head", None)
        if isinstance(head, nn.Linear):
            return head
        try:
            weight = self.get_input_embeddings().weight
        except ValueError:
            return None
        return next((m for m in self.modules()
                     if isinstance(m, nn.Linear) and m.weight is weight), None)

    def resize_token_embeddings(self, new_num_tokens: int) -> nn.Embedding:
        """Grow or shrink the vocabulary to ``new_num_tokens`` (e.g. after adding tokens).

        Kept rows are copied; new rows start at the mean of the old embeddings (HF's
        ``mean_resizing`` without its random spread). An output layer tied to the embedding
        stays tied, its bias and ``final_logits_bias`` follow; an untied head over the same
        vocabulary is resized the same way. ``config.vocab_size`` is updated.

        Returns:
            The new token embedding.
        """
        if isinstance(new_num_tokens, bool) or not isinstance(new_num_tokens, int) or \
                new_num_tokens < 1:
            raise ValueError(f"new_num_tokens must be a positive integer, got "
                             f"{new_num_tokens!r}")
        old = self.get_input_embeddings()
        old_size = old.num_embeddings
        head = self.get_output_embeddings()
        tied = head is not None and head.weight is old.weight
        new = nn.Embedding(new_num_tokens, old.embedding_dim, padding_idx=old.padding_idx
                           if old.padding_idx is not None and old.padding_idx < new_num_tokens
                           else None, device=old.weight.device, dtype=old.weight.dtype)
        new.weight.data = _resized(old.weight.data, new_num_tokens)
        _replace_module(self, old, new)
        output_vocab = getattr(self.config, "target_vocab_size", old_size)
        if head is not None and (tied or head.out_features == old_size == output_vocab):
            new_head = nn.Linear(head.in_features, new_num_tokens, bias=head.bias is not None,
                                 device=head.weight.device, dtype=head.weight.dtype)
            if tied:
                new_head.weight = new.weight
            else:
                new_head.weight.data = _resized(head.weight.data, new_num_tokens)
            if head.bias is not None:
                new_head.bias.data = _resized(head.bias.data[:, None], new_num_tokens,
                                              fill=0.0)[:, 0]
            _replace_module(self, head, new_head)
            bias = getattr(self, "final_logits_bias", None)
            if isinstance(bias, torch.Tensor) and bias.shape[-1] == old_size:
                self.final_logits_bias = _resized(bias.T, new_num_tokens, fill=0.0).T
        self.config.vocab_size = new_num_tokens
        return new

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each Transformer layer's activations in the backward pass (less memory,
        ~30% more compute), as ``trainer.activation_checkpointing`` does."""
        self._set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self) -> None:
        self._set_gradient_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())

    def _set_gradient_checkpointing(self, value: bool) -> None:
        stacks = [m for m in self.modules() if hasattr(m, "gradient_checkpointing")]
        if not stacks:
            raise ValueError(f"{type(self).__name__} has no layer stack that supports "
                             "gradient checkpointing")
        for stack in stacks:
            stack.gradient_checkpointing = value

    # ---- saving -------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, *, hf: bool = False) -> Path:
        """Write ``config.json``, ``model.safetensors`` and, where present, the generation
        config and tokenizer. With ``hf=True`` the directory is in HuggingFace layout."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if hf:
            get_checkpoint_format("huggingface").save(self, path)
        else:
            config = self.config.to_dict()
            config["formerkit"] = {"model": self.registry_name, "class": type(self).__name__,
                                   "format_version": FORMAT_VERSION}
            _write_json(path / CONFIG_NAME, config)
            save_state_dict(self.state_dict(), path / WEIGHTS_NAME)
        if self.generation_config:
            _write_json(path / GENERATION_CONFIG_NAME, self.generation_config)
        if self.tokenizer is not None:
            self.tokenizer.save(path)
        return path

    # ---- loading ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls: type[M], path: str | Path, **config_overrides: Any) -> M:
        """Load a formerkit directory, a HuggingFace directory of a supported type, or a
        llama.cpp ``.gguf`` file of the Llama family.

        ``config_overrides`` replace config fields that do not change weight shapes
        (e.g. ``dropout=0.0``).
        """
        path = Path(path)
        single_file = None if path.is_dir() else checkpoint_format_for(path, None)
        if single_file is not None:  # e.g. llama.cpp's GGUF: config, tokenizer, weights
            return single_file.load(cls, path, None, config_overrides)
        raw = read_config(path)
        if "formerkit" not in raw:
            model = foreign_format(path, raw).load(cls, path, raw, config_overrides)
        else:
            saved_class = raw["formerkit"].get("class")
            if saved_class and saved_class != cls.__name__ and cls is not PreTrainedModel:
                _check_compatible_class(cls, saved_class, path)
            values = {k: v for k, v in raw.items() if k != "formerkit"}
            values.update(config_overrides)
            config = cls.config_class.from_dict(values)
            model = build_from_weights(cls, config, weights_file(path))
        saved = _read_json(path / GENERATION_CONFIG_NAME, default=None)
        if saved:
            saved = without_out_of_vocab_ids(
                {"vocab_size": getattr(model.config, "vocab_size", None), **saved},
                path / GENERATION_CONFIG_NAME)
            saved.pop("vocab_size")
        model.generation_config = saved or model.generation_config
        from formerkit.data.tokenizers import load_tokenizer_if_present

        model.tokenizer = load_tokenizer_if_present(path)
        model.eval()
        return model


def without_out_of_vocab_ids(values: dict[str, Any], source: Path) -> dict[str, Any]:
    """``values`` with bos/eos/pad ids outside ``values["vocab_size"]`` left out, with a
    warning: transformers accepts such configs (GPT-2's default 50256 with a small
    vocabulary), so formerkit loads them too, but generation must not default to a token the
    model cannot produce."""
    import warnings

    vocab = values.get("vocab_size")
    if not isinstance(vocab, int):
        return values
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = values.get(name)
        ids = value if isinstance(value, list) else [value]
        kept = [i for i in ids if i is None or isinstance(i, int) and 0 <= i < vocab]
        if len(kept) == len(ids):
            continue
        warnings.warn(f"{source}: {name}={value!r} is outside the vocabulary of {vocab}; it "
                      "is left out of the generation defaults", stacklevel=3)
        values[name] = (kept or None) if isinstance(value, list) else None
    return values


def _resized(weight: torch.Tensor, rows: int, *, fill: float | None = None) -> torch.Tensor:
    """``weight`` (V, D) cut or grown to ``rows``; new rows are ``fill`` or the mean row."""
    out = weight.new_empty(rows, weight.shape[1])
    keep = min(rows, weight.shape[0])
    out[:keep] = weight[:keep]
    if rows > keep:
        out[keep:] = fill if fill is not None else weight.float().mean(dim=0).to(weight.dtype)
    return out


def _replace_module(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Swap every reference to ``old`` inside ``model`` (shared modules stay shared)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if child is old:
                setattr(parent, name, new)


def _check_compatible_class(cls: type, saved_class: str, path: Path) -> None:
    # A head may load its family's base model weights, and the base model a head's: the state
    # dict loader reports what is missing. A different family is a clear error.
    from formerkit.models.registry import get_model_class

    family = getattr(cls, "registry_name", "")
    saved = get_model_class(saved_class)
    if saved is not None and getattr(saved, "config_class", None) is not cls.config_class:
        raise ValueError(f"{path / CONFIG_NAME} holds a {saved_class}, which cannot be "
                         f"loaded as {cls.__name__} ({family or 'other family'})")


def read_config(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: not a model directory")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_file} is not valid JSON: {err}") from None


def save_state_dict(state_dict: dict[str, torch.Tensor], file: Path,
                    metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors; tied tensors are stored once per name (cloned)."""
    from safetensors.torch import save_file

    seen: dict[int, str] = {}
    tensors = {}
    for name, tensor in state_dict.items():
        key = tensor.data_ptr()
        tensors[name] = tensor.detach().clone().contiguous() if key in seen else \
            tensor.detach().contiguous()
        seen.setdefault(key, name)
    save_file(tensors, str(file), metadata=metadata or {"format": "pt"})


def weights_file(path: Path) -> Path:
    """``model.safetensors`` or ``pytorch_model.bin`` of a model directory.

    Raises:
        FileNotFoundError: the directory holds neither.
    """
    for name in (WEIGHTS_NAME, BIN_WEIGHTS_NAME):
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"no weights in {path}: expected {WEIGHTS_NAME} "
                            f"or {BIN_WEIGHTS_NAME}")


def load_weights(path: Path) -> StateDict:
    """Read ``model.safetensors`` or ``pytorch_model.bin`` (``weights_only=True``) from a dir."""
    return read_weights(weights_file(path))


def read_weights(file: Path) -> StateDict:
    """All tensors of a safetensors or ``weights_only`` torch file, with one clear error for a
    truncated or corrupt file.

    Safetensors are read straight into tensors of their own (not views of a memory-mapped
    file, which would crash the process with SIGBUS once the file is rewritten in place).
    """
    if file.suffix == ".safetensors":
        return _read_safetensors(file)
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read weights {file}: {err} "
                         "(truncated or corrupt file, or it holds pickled code?)") from None


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
                       "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
                       "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                       "BOOL": torch.bool}
_MAX_HEADER = 100 * 1024 * 1024  # as safetensors itself
_Entry = tuple[torch.dtype, list[int], int, int]  # dtype, shape, start and end byte


def _safetensors_entries(file: Path) -> tuple[int, dict[str, _Entry]]:
    """``(offset of the data, {name: (dtype, shape, start, end)})`` from a safetensors
    header, checking that every tensor lies inside the file."""
    size = file.stat().st_size
    with open(file, "rb") as handle:
        first = handle.read(8)
        length = int.from_bytes(first, "little") if len(first) == 8 else -1
        if not 0 < length <= min(size - 8, _MAX_HEADER):
            raise ValueError(f"cannot read weights {file}: not a safetensors file "
                             "(truncated or corrupt file?)")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read weights {file}: corrupt header ({err})") from None
    data_size = size - 8 - length
    entries: dict[str, _Entry] = {}
    for name, info in (header.items() if isinstance(header, dict) else ()):
        if name == "__metadata__":
            continue
        try:
            dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            shape = [int(n) for n in info["shape"]]
            start, end = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"cannot read weights {file}: tensor {name!r} has a corrupt or "
                             "unsupported header entry") from None
        nbytes = math.prod(shape) * dtype.itemsize
        if min(shape, default=0) < 0 or not 0 <= start <= end <= data_size or \
                end - start != nbytes:
            raise ValueError(f"cannot read weights {file}: tensor {name!r} of shape "
                             f"{tuple(shape)} does not fit in the file (truncated or corrupt?)")
        entries[name] = (dtype, shape, start, end)
    return 8 + length, entries


def _read_safetensors(file: Path) -> StateDict:
    if sys.byteorder != "little":  # safetensors stores little-endian
        from safetensors.torch import load_file

        return {k: v.clone() for k, v in load_file(str(file)).items()}
    offset, entries = _safetensors_entries(file)
    tensors: StateDict = {}
    with open(file, "rb") as handle:
        for name, (dtype, shape, start, end) in entries.items():
            tensor = torch.empty(shape, dtype=dtype)
            if end > start:
                handle.seek(offset + start)
                buffer = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
                if handle.readinto(buffer) != end - start:
                    raise ValueError(f"cannot read weights {file}: tensor {name!r} is cut "
                                     "short (truncated file?)")
            tensors[name] = tensor
    return tensors


def read_weights_header(file: Path) -> StateDict:
    """Name -> meta tensor (shape and dtype) of every tensor in ``file``, read without loading
    the weights; a safetensors header must place every tensor inside the file.

    Raises:
        ValueError: naming the file when the header is corrupt or a tensor lies beyond the end.
    """
    if file.suffix == ".safetensors":
        _, entries = _safetensors_entries(file)
        return {name: torch.empty(shape, dtype=dtype, device="meta")
                for name, (dtype, shape, _, _) in entries.items()}
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip archive (mmap needs one): read it whole
        state = read_weights(file)
    if not isinstance(state, dict):
        raise ValueError(f"{file} holds a {type(state).__name__}, not a dict of tensors")
    return {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in state.items()
            if isinstance(v, torch.Tensor)}


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_",
                   "eye_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
                   "kaiming_normal_", "orthogonal_", "sparse_")


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Build modules with their parameters on the meta device (no memory, no init cost);
    buffers stay real, so tables computed in ``__init__`` (sinusoidal positions) are kept. A
    parameter that is already on meta is registered as is, so weight tying survives.

    ``torch.nn.init`` functions skip meta tensors meanwhile, as transformers'
    ``no_init_weights`` does: the weights are about to be replaced, and a first random fill on
    meta costs a second of imports. The patch is process-wide (as accelerate's
    ``init_empty_weights``), so builds under it are serialised.
    """
    with _META_BUILD:
        yield from _patched_for_meta()


_META_BUILD = threading.RLock()  # re-entrant: a model may load another in __init__


def _patched_for_meta() -> Iterator[None]:
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.data.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    def skipping_meta(init: Callable) -> Callable:
        def run(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            return tensor if tensor.is_meta else init(tensor, *args, **kwargs)
        return run

    originals = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS
                 if hasattr(nn.init, name)}
    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    for name, init in originals.items():
        setattr(nn.init, name, skipping_meta(init))
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]
        for name, init in originals.items():
            setattr(nn.init, name, init)


def build_from_weights(cls: type[M], config: ConfigBase, file: Path,
                       convert: Callable[[StateDict], StateDict] | None = None) -> M:
    """Build ``cls(config)`` holding the weights of ``file``, checking sizes first.

    Args:
        cls: the model class.
        config: its config.
        file: ``model.safetensors`` or ``pytorch_model.bin``.
        convert: maps the file's state dict onto the model's names (HF checkpoints); it must
            work on meta tensors too, as it is first run on the header alone.

    Raises:
        ValueError: the config describes more weights than the file holds, or a tensor is
            missing, unexpected or of another shape (all before the weights are read).
    """
    from formerkit.models.sizing import check_matches_weights

    convert = convert or (lambda state: state)
    header = read_weights_header(file)
    check_matches_weights(config, sum(t.numel() for t in header.values()), file)
    with parameters_on_meta():
        model = cls(config)
    with warnings.catch_warnings():  # the converter warns again on the real tensors
        warnings.simplefilter("ignore")
        check_state_dict_fits(model, convert(header), source=file)
    assign_state_dict(model, convert(read_weights(file)))
    return model


def assign_state_dict(model: nn.Module, state_dict: StateDict) -> None:
    """Put ``state_dict``'s tensors into ``model`` (built by ``parameters_on_meta``) without
    copying, cast to the model's dtypes, and tie again the parameters the model shares."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    expected = model.state_dict()
    state = {name: tensor.to(expected[name].dtype) if name in expected and
             tensor.dtype != expected[name].dtype else tensor
             for name, tensor in state_dict.items()}
    model.load_state_dict(state, strict=True, assign=True)
    for names in groups.values():
        shared = model.get_parameter(names[0])
        for name in names[1:]:
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, shared)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{type(model).__name__}: no weights were loaded into {left[:5]}")


def load_state_dict_into(model: nn.Module, state_dict: dict[str, torch.Tensor],
                         *, source: Path | str) -> None:
    """Strictly load weights, naming the tensor and file on any missing, extra or misshapen
    tensor. Non-persistent buffers are not expected in the file."""
    check_state_dict_fits(model, state_dict, source=source)
    model.load_state_dict(state_dict, strict=True)


def check_state_dict_fits(model: nn.Module, state_dict: StateDict, *, source: Path | str) -> None:
    """Raise ``ValueError`` naming each missing, unexpected or misshapen tensor (shapes only:
    works on meta tensors)."""
    expected = model.state_dict()
    problems = []
    for name, tensor in expected.items():
        if name not in state_dict:
            problems.append(f"missing tensor {name!r}")
        elif tuple(state_dict[name].shape) != tuple(tensor.shape):
            problems.append(f"tensor {name!r} has shape {tuple(state_dict[name].shape)}, "
                            f"model expects {tuple(tensor.shape)}")
    problems += [f"unexpected tensor {name!r}" for name in state_dict if name not in expected]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                           if len(problems) > 5 else "")
        raise ValueError(f"weights in {source} do not fit {type(model).__name__}: {shown}")


def _write_json(file: Path, data: Any) -> None:
    file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _read_json(file: Path, default: Any) -> Any:
    return json.loads(file.read_text()) if file.is_file() else default
