"""Sentence embeddings from sentence-transformers directories: pooling against a hand-computed
mean (and CLS, max, sqrt-length) over transformers' own token states, normalisation, batching,
the embed command, and the error cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from formerkit import cli
from formerkit.data.tokenizers import train_wordpiece
from formerkit.embeddings import SentenceEncoder, load_sentence_encoder, pool

transformers = pytest.importorskip("transformers")
TEXTS = ["the cat sat", "a dog sat on the mat and the cat sat too", "mat", "the dog"]


def _st_dir(tmp_path, *, mode="mean", normalize=True):
    """A sentence-transformers directory around a random transformers BertModel."""
    tokenizer = train_wordpiece(TEXTS * 10, 60)
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=24, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=48, max_position_embeddings=64,
        attn_implementation="eager")).eval()
    bert.save_pretrained(tmp_path)
    tokenizer.save(tmp_path)
    modules = [{"idx": 0, "name": "0", "path": "",
                "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling").mkdir()
    keys = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
            "max": "pooling_mode_max_tokens", "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens"}
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 24, **{k: k == keys[mode] for k in keys.values()}}))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32}))
    return tmp_path, bert, tokenizer


def _by_hand(bert, tokenizer, mode, normalize):
    rows = []
    for text in TEXTS:  # one at a time: no padding at all
        ids = torch.tensor([tokenizer.encode(text)])
        with torch.no_grad():
            states = bert(input_ids=ids).last_hidden_state[0]  # (T, D)
        vector = {"mean": states.mean(0), "cls": states[0], "max": states.max(0).values,
                  "mean_sqrt_len": states.sum(0) / states.shape[0] ** 0.5}[mode]
        rows.append(vector / vector.norm() if normalize else vector)
    return torch.stack(rows).numpy()


@pytest.mark.parametrize("mode,normalize", [("mean", True), ("mean", False), ("cls", False),
                                            ("max", True), ("mean_sqrt_len", False)])
def test_encode_equals_the_hand_computed_pooling(tmp_path, mode, normalize):
    path, bert, tokenizer = _st_dir(tmp_path, mode=mode, normalize=normalize)
    encoder = load_sentence_encoder(path)
    assert isinstance(encoder, SentenceEncoder) and encoder.pooling == mode
    assert encoder.max_length == 32
    got = encoder.encode(TEXTS, batch_size=3)  # padded batches of 3 and 1
    np.testing.assert_allclose(got, _by_hand(bert, tokenizer, mode, normalize), atol=1e-5)
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_embed_command_writes_the_same_vectors(tmp_path, capsys):
    path, bert, tokenizer = _st_dir(tmp_path / "st")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "emb.npy"
    assert cli.main(["embed", str(path), "--input", str(texts), "--output", str(out),
                     "--batch-size", "2"]) == 0
    np.testing.assert_allclose(np.load(out), _by_hand(bert, tokenizer, "mean", True), atol=1e-5)
    (tmp_path / "empty.txt").write_text("")
    assert cli.main(["embed", str(path), "-i", str(tmp_path / "empty.txt"), "-o",
                     str(out)]) == 2
    assert "no lines to embed" in capsys.readouterr().err


def test_unsupported_configs_are_errors_that_name_them(tmp_path):
    path, _, _ = _st_dir(tmp_path)
    config = path / "1_Pooling" / "config.json"
    values = json.loads(config.read_text())
    config.write_text(json.dumps({**values, "pooling_mode_weightedmean_tokens": True}))
    with pytest.raises(ValueError, match="pooling_mode_weightedmean_tokens"):
        load_sentence_encoder(path)
    config.write_text(json.dumps(values))
    modules = json.loads((path / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense",
                    "type": "sentence_transformers.models.Dense"})
    (path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="module type 'sentence_transformers.models.Dense'"):
        load_sentence_encoder(path)
    with pytest.raises(ValueError, match="pooling mode"):
        pool(torch.zeros(1, 2, 3), torch.ones(1, 2), "weighted")
