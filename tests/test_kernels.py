"""The native LSTM kernel computes nn.LSTM's function and gradients in every variant, is loaded
only from the installed package and only when that is safe, and falls back cleanly."""

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from rnnkit import kernels
from rnnkit.config import ModelConfig
from rnnkit.models import Classifier, LanguageModel
from rnnkit.models.encoder import Dropout

ALL_VARIANTS = pytest.mark.parametrize("variant", kernels.VARIANTS)


def _need(variant):
    if variant not in kernels.variants():
        pytest.skip(f"this CPU does not run the {variant} variant")


def test_kernel_is_built_here():
    # CI installs a C compiler (scripts/install.sh) before rnnkit, so the install must have
    # built the extension, and the fast path must be the one tested.
    if os.environ.get("RNNKIT_NATIVE") == "0":
        pytest.skip("RNNKIT_NATIVE=0 turns the kernel off")
    path = kernels.library_path()
    assert path is not None, (f"no _lstm library in {kernels.PACKAGE_DIR}: the install did not "
                              "build the native kernel (was a C compiler installed?)")
    assert kernels.available(), f"the native LSTM kernel is off: {kernels._state().reason}"
    assert kernels.variants()[0] == "plain"
    assert kernels.variant() == kernels.variants()[-1]  # the widest this CPU runs


def _compare(variant, B, T, I, H, with_state, input_grad):
    torch.manual_seed(B * 100 + T)
    lstm = nn.LSTM(I, H, batch_first=True)
    x = torch.randn(B, T, I, requires_grad=input_grad)
    state = (torch.randn(1, B, H, requires_grad=True), torch.randn(1, B, H, requires_grad=True))
    out, (h, c) = lstm(x, state if with_state else None)
    g_out, g_h, g_c = torch.randn_like(out), torch.randn_like(h), torch.randn_like(c)
    inputs = list(lstm.parameters()) + ([x] if input_grad else []) + (
        list(state) if with_state else [])
    loss = (out * g_out).sum() + (h * g_h).sum() + (c * g_c).sum()
    expected = torch.autograd.grad(loss, inputs)

    h0, c0 = (state[0][0], state[1][0]) if with_state else (None, None)
    out2, h2, c2 = kernels.lstm_layer(x, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0,
                                      lstm.bias_hh_l0, h0, c0, variant=variant)
    torch.testing.assert_close(out2, out, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(h2, h[0], atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(c2, c[0], atol=2e-6, rtol=1e-5)
    loss2 = (out2 * g_out).sum() + (h2 * g_h[0]).sum() + (c2 * g_c[0]).sum()
    got = torch.autograd.grad(loss2, inputs)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


SHAPES = [(24, 37, 50, 64), (5, 7, 3, 13), (1, 1, 4, 8), (9, 12, 16, 96), (3, 5, 7, 1)]
# With these too, every loop of every variant runs: 16-wide blocks, 8-wide, the scalar rest.
VARIANT_SHAPES = SHAPES + [(6, 4, 5, 27), (4, 3, 2, 40)]


@pytest.mark.parametrize("B,T,I,H", SHAPES)
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("input_grad", [False, True])
def test_native_layer_matches_nn_lstm(B, T, I, H, with_state, input_grad):
    assert kernels.available()
    _compare(None, B, T, I, H, with_state, input_grad)  # the variant in use


@ALL_VARIANTS
@pytest.mark.parametrize("B,T,I,H", VARIANT_SHAPES)
def test_every_variant_matches_nn_lstm(variant, B, T, I, H):
    """Plain C, AVX2+FMA and AVX-512, each where this CPU runs it: the same function."""
    _need(variant)
    _compare(variant, B, T, I, H, with_state=True, input_grad=True)


def test_variants_are_what_they_say():
    lib = kernels.library()
    assert [lib.rk_vector_width(n) for n in range(len(kernels.VARIANTS))] == [1, 8, 16]
    assert set(kernels.variants()) <= set(kernels.VARIANTS)


def test_variant_choice(monkeypatch, caplog):
    """RNNKIT_NATIVE_ISA picks a variant the CPU runs; any other value gets the widest, and
    a line that says so."""
    for wanted, supported, chosen in (("", ("plain", "avx2"), "avx2"),
                                      ("plain", ("plain", "avx2"), "plain"),
                                      ("AVX2", ("plain", "avx2", "avx512"), "avx2"),
                                      ("avx512", ("plain", "avx2"), "avx2"),
                                      ("sse9", ("plain",), "plain")):
        monkeypatch.setenv("RNNKIT_NATIVE_ISA", wanted)
        notes = []
        assert kernels._choose(supported, notes) == chosen
        assert len(notes) == (1 if wanted in ("avx512", "sse9") else 0)
        assert all(f"RNNKIT_NATIVE_ISA={wanted}" in note for note in notes)


def _python(code, **env):
    """Run `code` in a fresh interpreter with this one's packages."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RNNKIT_NATIVE")}
    base.update(OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, "-c", code], env=base, capture_output=True,
                          text=True, timeout=300)


# Uses the kernel the way the encoder does; stdout: one JSON line.
USE_KERNEL = """
import json, sys, torch
from rnnkit import kernels
lstm = torch.nn.LSTM(3, 8, batch_first=True)
x = torch.randn(2, 4, 3)
assert not kernels.usable(x, kernels.MAX_HIDDEN + 1)  # not needed: says nothing
assert not kernels.usable(x.double(), 8)
print("--", file=sys.stderr, flush=True)
used = [kernels.usable(x, 8) for _ in range(3)][0]
if used:
    kernels.lstm_layer(x, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0,
                       lstm.bias_hh_l0)[0].sum()
print(json.dumps({"used": used, "variant": kernels.variant()}))
"""


def test_isa_override_in_a_fresh_process():
    _need("plain")
    done = _python(USE_KERNEL, RNNKIT_NATIVE_ISA="plain")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"used": True, "variant": "plain"}
    assert done.stderr == "--\n"  # a choice the CPU runs is not worth a line


def test_disabled_says_so_once_on_stderr():
    done = _python(USE_KERNEL, RNNKIT_NATIVE="0")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"used": False, "variant": None}  # stdout: JSON only
    before, after = done.stderr.split("--\n")
    assert before == ""  # a layer too large or a float64 input: the kernel is not needed
    lines = after.splitlines()
    assert len(lines) == 1 and "RNNKIT_NATIVE=0" in lines[0], done.stderr


def _old_cache_key(compiler: str) -> str:
    """The name the run-time build looked for: a hash of public inputs, anyone can compute."""
    signature = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            signature = next((line for line in info if line.startswith(("flags", "Features"))),
                             signature)
    except OSError:
        pass
    flags = "-O3 -march=native -fPIC -shared -fopenmp -fno-math-errno"
    source = (Path(kernels.__file__).with_name("lstm.c")).read_bytes()
    return hashlib.sha256(b"\0".join([source, compiler.encode(), flags.encode(),
                                      signature.encode()])).hexdigest()[:16]


def _compiler():
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the planted library with")
    return compiler


@pytest.mark.parametrize("where", ["home", "tmp"])
def test_planted_library_is_never_loaded(tmp_path, where):
    """Another local user could put a library where the kernel used to be cached
    ($RNNKIT_HOME/kernels, or $TMPDIR/rnnkit-kernels when that is not writable) under the
    name rnnkit would look for. It must never be loaded, and nothing is compiled."""
    marker, cc_marker = tmp_path / "planted-ran", tmp_path / "compiler-ran"
    fake_cc = tmp_path / "fake-cc"
    fake_cc.write_text(f"#!/bin/sh\ntouch {cc_marker}\nexit 1\n")
    fake_cc.chmod(0o755)
    source = tmp_path / "planted.c"
    source.write_text('#include <stdio.h>\n'
                      '__attribute__((constructor)) static void planted(void) {\n'
                      f'    FILE *f = fopen("{marker}", "w");\n'
                      '    if (f) { fputs("loaded\\n", f); fclose(f); }\n'
                      '}\n'
                      'int rk_vector_width(void) { return 8; }\n'
                      'int rk_variants(void) { return 1; }\n')
    planted = tmp_path / "planted.so"
    subprocess.run([_compiler(), "-shared", "-fPIC", str(source), "-o", str(planted)],
                   check=True, capture_output=True)
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    tmp.mkdir()
    if where == "home":
        folder = home / "kernels"
    else:
        (tmp_path / "file").write_text("")  # a file where RNNKIT_HOME should be: unwritable
        home, folder = tmp_path / "file" / "home", tmp / "rnnkit-kernels"
    folder.mkdir(parents=True)
    for key in (_old_cache_key(str(fake_cc)), "0123456789abcdef"):
        shutil.copy(planted, folder / f"lstm-{key}.so")
    planted_files = sorted(folder.iterdir())

    done = _python(USE_KERNEL, RNNKIT_HOME=str(home), TMPDIR=str(tmp), CC=str(fake_cc))
    assert not marker.exists(), f"the library planted in {folder} was loaded"
    assert not cc_marker.exists(), "a compiler was run at run time"
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["used"] is True  # the installed kernel ran
    assert done.stderr == "--\n"
    assert sorted(folder.iterdir()) == planted_files
    assert not (tmp / "rnnkit-kernels").exists() or where == "tmp"


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A folder standing in for the package's, holding a copy of the installed library, as
    kernels sees it when loading for the first time in a process; the real state is restored
    afterwards."""
    installed = kernels.library_path()
    assert installed is not None, "the install did not build the native kernel"
    folder = tmp_path / "kernels"
    folder.mkdir()
    folder.chmod(0o755)
    copy = folder / installed.name
    shutil.copy(installed, copy)
    copy.chmod(0o644)
    monkeypatch.setattr(kernels, "PACKAGE_DIR", folder)
    monkeypatch.setattr(kernels, "_kernel", None)
    monkeypatch.delenv("RNNKIT_NATIVE", raising=False)
    monkeypatch.delenv("RNNKIT_NATIVE_ISA", raising=False)
    return copy


def _kernel_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "rnnkit.kernels"]


def _off_once(caplog, *words):
    """The kernel is off, and one line, once, said so with these words."""
    with caplog.at_level(logging.WARNING, logger="rnnkit.kernels"):
        for _ in range(3):
            assert not kernels.available()
            assert not kernels.usable(torch.zeros(2, 3, 4), 8)
    lines = _kernel_lines(caplog)
    assert len(lines) == 1 and "\n" not in lines[0], lines
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_safe_package_library_loads(package_copy, caplog):
    with caplog.at_level(logging.WARNING, logger="rnnkit.kernels"):
        assert kernels.available()
        assert kernels.variant() == kernels.variants()[-1]
    assert _kernel_lines(caplog) == []
    _compare(None, 5, 7, 3, 13, with_state=True, input_grad=True)


@pytest.mark.parametrize("mode", [0o664, 0o646])
def test_writable_library_is_refused(package_copy, caplog, mode):
    package_copy.chmod(mode)
    _off_once(caplog, "refused", str(package_copy), "writable by group or others")


def test_writable_folder_is_refused(package_copy, caplog):
    package_copy.parent.chmod(0o775)
    _off_once(caplog, "refused", str(package_copy), "its folder", "writable")


def test_symlinked_library_is_refused(package_copy, caplog, tmp_path):
    elsewhere = tmp_path / "elsewhere.so"
    package_copy.rename(elsewhere)
    package_copy.symlink_to(elsewhere)
    _off_once(caplog, "refused", str(package_copy), "symbolic link")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_library_of_another_user_is_refused(package_copy, caplog):
    os.chown(package_copy, 12345, 12345)
    _off_once(caplog, "refused", str(package_copy), "uid 12345")


def test_library_that_does_not_load_says_so(package_copy, caplog):
    package_copy.write_bytes(b"not a shared library")
    _off_once(caplog, "failed to load", str(package_copy))


def test_missing_library_says_so(package_copy, caplog):
    package_copy.unlink()
    _off_once(caplog, "no library was built", "C compiler")


def test_disabled_says_so(package_copy, caplog, monkeypatch):
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    _off_once(caplog, "disabled", "RNNKIT_NATIVE=0")


def test_lstm_layer_checks_its_inputs():
    torch.manual_seed(0)
    B, T, I, H = 3, 4, 5, 8
    lstm = nn.LSTM(I, H, batch_first=True)
    good = dict(x=torch.randn(B, T, I), w_ih=lstm.weight_ih_l0, w_hh=lstm.weight_hh_l0,
                b_ih=lstm.bias_ih_l0, b_hh=lstm.bias_hh_l0, h0=torch.zeros(B, H),
                c0=torch.zeros(B, H))
    kernels.lstm_layer(**good)
    bad = {
        "x": [torch.randn(B, T, I, dtype=torch.float64), torch.randn(B, T),
              torch.randn(B, I, T).transpose(1, 2), torch.randn(B, T, 2 * I)[..., ::2],
              torch.randn(B, 0, I), torch.randn(B, T, I, device="meta"), [[1.0]]],
        "w_ih": [lstm.weight_ih_l0[:, :-1], lstm.weight_ih_l0.t().contiguous().t(),
                 lstm.weight_ih_l0.double()],
        "w_hh": [lstm.weight_hh_l0[:-1], torch.randn(4 * H, H + 1), torch.randn(4 * H),
                 torch.randn(0, 0)],
        "b_ih": [lstm.bias_ih_l0[:-1], lstm.bias_ih_l0.half(), lstm.bias_ih_l0[None]],
        "b_hh": [torch.randn(8 * H)[::2], torch.randn(4 * H, device="meta")],
        "h0": [torch.zeros(B + 1, H), torch.zeros(H, B).t(), torch.zeros(1, B, H),
               torch.zeros(B, H, dtype=torch.int32)],
        "c0": [torch.zeros(B, H - 1), torch.zeros(B, 2 * H)[:, ::2]],
    }
    for name, values in bad.items():
        for value in values:
            with pytest.raises(ValueError, match=f"lstm_layer: {name}"):
                kernels.lstm_layer(**dict(good, **{name: value}))
    with pytest.raises(ValueError, match="variant"):
        kernels.lstm_layer(**good, variant="sse9")


@ALL_VARIANTS
def test_threads_do_not_change_results(variant):
    _need(variant)
    torch.manual_seed(1)
    lstm = nn.LSTM(6, 16, batch_first=True)
    x = torch.randn(13, 9, 6)
    weights = (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernels.lstm_layer(x, *weights, variant=variant)[0]
        torch.set_num_threads(3)
        three = kernels.lstm_layer(x, *weights, variant=variant)[0]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, three)  # rows never interact: bit-identical


@pytest.mark.parametrize("bidirectional", [False, True])
def test_encoder_native_equals_torch_path(monkeypatch, bidirectional):
    """Whole models: the native encoder gives nn.LSTM's outputs and gradients."""
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=12, embedding_dim=10, num_layers=2, dropout=0.0,
                      bidirectional=bidirectional, pooling="meanmax")
    model = Classifier(40, 3, cfg, pad_id=0).train()
    ids = torch.randint(1, 40, (5, 11))
    lengths = torch.tensor([11, 3, 7, 1, 9])
    for row, n in enumerate(lengths):
        ids[row, n:] = 0

    def run():
        model.zero_grad()
        logits = model(ids, lengths)[0]
        logits.square().sum().backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    assert model.encoder._native(torch.zeros(1))
    native_logits, native_grads = run()
    monkeypatch.setattr(kernels, "usable", lambda x, hidden: False)
    assert not model.encoder._native(torch.zeros(1))
    torch_logits, torch_grads = run()
    torch.testing.assert_close(native_logits, torch_logits, atol=1e-5, rtol=1e-5)
    for a, b in zip(native_grads, torch_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_language_model_state_carried_natively(monkeypatch):
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=16, embedding_dim=16, num_layers=2, dropout=0.0)
    model = LanguageModel(50, cfg).eval()
    ids = torch.randint(0, 50, (3, 8))
    state = model.initial_state(3)
    with torch.inference_mode():
        out_a, state_a = model(ids[:, :4], state)
        out_b, state_b = model(ids[:, 4:], state_a)
        monkeypatch.setattr(kernels, "usable", lambda x, hidden: False)
        ref_a, ref_state_a = model(ids[:, :4], state)
        ref_b, ref_state_b = model(ids[:, 4:], ref_state_a)
    torch.testing.assert_close(out_a, ref_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_b, ref_b, atol=1e-5, rtol=1e-5)
    for a, b in zip(state_b, ref_state_b):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_large_hidden_and_other_devices_use_torch():
    assert not kernels.usable(torch.zeros(2, 3, 4), kernels.MAX_HIDDEN + 1)
    assert not kernels.usable(torch.zeros(2, 3, 4, dtype=torch.float64), 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not kernels.usable(torch.zeros(2, 3, 4), 8)


def test_dropout_rate_and_scale():
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    layer = Dropout(0.25).train()
    y = layer(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.002
    assert torch.all(y[kept] == 1 / 0.75)  # round(0.25 * 65536) / 65536 is exactly 0.25
    assert abs(y.mean().item() - 1.0) < 0.003  # unbiased
    odd = Dropout(0.3).train()(torch.ones(7, 13))  # sizes not a multiple of four
    assert odd.shape == (7, 13) and set(odd.unique().tolist()) <= {0.0, torch.tensor(65536 / 45875).item()}
    torch.manual_seed(5)
    a = layer(x)
    torch.manual_seed(5)
    assert torch.equal(a, layer(x))  # drawn from torch's generator: seeded runs repeat
    assert torch.equal(Dropout(0.25).eval()(x), x)


@ALL_VARIANTS
def test_nan_propagates_like_nn_lstm(variant):
    """A diverged model must show as NaN (the trainer stops on a non-finite loss), not be
    clamped into finite numbers by the kernel's exp. 27 units: every loop of every variant."""
    _need(variant)
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 27, batch_first=True)
    x = torch.randn(5, 3, 4)
    x[0, 1, 2] = float("nan")
    out = kernels.lstm_layer(x, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0,
                             lstm.bias_hh_l0, variant=variant)[0]
    assert torch.isnan(out[0, 1:]).all() and not torch.isnan(out[1:]).any()
    assert torch.equal(torch.isnan(out), torch.isnan(lstm(x)[0]))
