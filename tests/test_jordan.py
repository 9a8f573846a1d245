"""The Jordan network: its equations, its state, its gradients."""

import pytest
import torch

from rnnkit.models.jordan import JordanRNN


def step_loop(model: JordanRNN, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """h_t = tanh(W_x x_t + b + W_y y_{t-1}), y_t = W_o h_t + b_o, written out."""
    W_x, b = model.input_layer.weight, model.input_layer.bias
    W_y = model.feedback.weight
    W_o, b_o = model.output_layer.weight, model.output_layer.bias
    outputs = []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ W_x.t() + b + y @ W_y.t())
        y = h @ W_o.t() + b_o
        outputs.append(y)
    return torch.stack(outputs, 1)


def test_matches_the_equations_step_by_step():
    torch.manual_seed(0)
    model = JordanRNN(4, 6, output_size=3)
    x, y0 = torch.randn(2, 5, 4), torch.randn(2, 3)
    out, state = model(x, y0.unsqueeze(0))
    assert out.shape == (2, 5, 3) and state.shape == (1, 2, 3)
    torch.testing.assert_close(out, step_loop(model, x, y0), atol=1e-6, rtol=1e-6)
    assert torch.equal(state[0], out[:, -1])  # the state is the last output
    # No state means a zero previous output.
    assert torch.equal(model(x)[0], model(x, torch.zeros(1, 2, 3))[0])


def test_state_carried_across_windows_equals_one_long_window():
    torch.manual_seed(0)
    model = JordanRNN(4, 6)
    assert model.output_size == 6  # defaults to hidden_size, like nn.RNN's outputs
    x = torch.randn(3, 10, 4)
    whole, whole_state = model(x)
    first, state = model(x[:, :4])
    second, state = model(x[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(state, whole_state, atol=1e-6, rtol=1e-6)


def test_time_major_layout_like_nn_rnn():
    torch.manual_seed(0)
    batch_major = JordanRNN(4, 5, output_size=2)
    time_major = JordanRNN(4, 5, output_size=2, batch_first=False)
    time_major.load_state_dict(batch_major.state_dict())
    x = torch.randn(3, 6, 4)  # (B, T, I)
    out, state = time_major(x.transpose(0, 1))
    expected, expected_state = batch_major(x)
    assert out.shape == (6, 3, 2)
    torch.testing.assert_close(out.transpose(0, 1), expected)
    torch.testing.assert_close(state, expected_state)


def test_memory_goes_only_through_the_output():
    torch.manual_seed(0)
    model = JordanRNN(3, 4, output_size=2)
    x = torch.randn(1, 4, 3)
    changed = x.clone()
    changed[:, 0] += 1.0
    assert not torch.allclose(model(x)[0][:, -1], model(changed)[0][:, -1])
    with torch.no_grad():
        model.feedback.weight.zero_()  # cut the feedback: each step sees only its own input
    torch.testing.assert_close(model(x)[0][:, 1:], model(changed)[0][:, 1:])


def test_gradients_flow_to_every_parameter_the_input_and_the_state():
    torch.manual_seed(0)
    model = JordanRNN(3, 4, output_size=2).double()
    x = torch.randn(2, 5, 3, dtype=torch.double, requires_grad=True)
    y0 = torch.randn(1, 2, 2, dtype=torch.double, requires_grad=True)
    out, state = model(x, y0)
    (out.pow(2).sum() + state.sum()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0 and y0.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda a, b: model(a, b), (x, y0))


def test_repr_and_sizes():
    model = JordanRNN(3, 4, output_size=2)
    assert (model.num_layers, model.bidirectional, model.hidden_size) == (1, False, 4)
    assert "output_size=2" in repr(model)
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 5, 7))  # wrong input size
