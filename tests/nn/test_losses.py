"""token_cross_entropy: F.cross_entropy's value and gradient within float32 rounding, its
gradient computed in place, and F.cross_entropy itself where no gradient is needed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from formerkit.nn.losses import token_cross_entropy


def _logits_and_targets(rows: int = 37, vocab: int = 1000, ignored: int = 5):
    torch.manual_seed(0)
    logits = torch.randn(rows, vocab) * 3
    targets = torch.randint(0, vocab, (rows,))
    targets[torch.randperm(rows)[:ignored]] = -100
    return logits, targets


@pytest.mark.parametrize("ignored", [0, 5])
def test_value_and_gradient_equal_f_cross_entropy(ignored):
    logits, targets = _logits_and_targets(ignored=ignored)
    ours, reference = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss = token_cross_entropy(ours, targets)
    expected = F.cross_entropy(reference, targets, ignore_index=-100)
    assert type(loss.grad_fn).__name__ == "_TokenCrossEntropyBackward"
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    (2.5 * loss).backward()  # an upstream gradient other than 1
    (2.5 * expected).backward()
    torch.testing.assert_close(ours.grad, reference.grad, rtol=1e-5, atol=1e-7)
    assert torch.equal(ours.grad[targets == -100], torch.zeros(ignored, logits.shape[1]))


def test_a_batch_with_no_target_is_nan_as_f_cross_entropy():
    logits = torch.randn(4, 10, requires_grad=True)
    targets = torch.full((4,), -100)
    assert token_cross_entropy(logits, targets).isnan()
    assert F.cross_entropy(logits, targets).isnan()


def test_without_a_gradient_it_is_f_cross_entropy_bit_for_bit():
    logits, targets = _logits_and_targets()
    with torch.no_grad():
        assert torch.equal(token_cross_entropy(logits.requires_grad_(), targets),
                           F.cross_entropy(logits, targets))


def test_a_second_backward_is_a_clear_error():
    logits, targets = _logits_and_targets()
    loss = token_cross_entropy(logits.requires_grad_(), targets)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once per forward|modified by an inplace"):
        loss.backward()


def test_causal_lm_loss_and_gradients_match_f_cross_entropy(monkeypatch):
    import formerkit
    from formerkit.models import decoder_only

    torch.manual_seed(0)
    model = formerkit.create_model("llama", vocab_size=300, d_model=32, n_heads=4, n_kv_heads=2,
                                   n_layers=2, d_ff=48, max_seq_len=16)
    ids = torch.randint(0, 300, (3, 16))

    def step():
        model.zero_grad(set_to_none=True)
        loss = model(ids, labels=ids).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss, grads = step()
    monkeypatch.setattr(decoder_only, "token_cross_entropy",
                        lambda logits, targets: F.cross_entropy(logits, targets))
    expected_loss, expected_grads = step()
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-6)
    for grad, expected in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-7)
