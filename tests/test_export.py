"""The sparse export, the CSR model and the physically smaller FCN, each against the masked dense model."""

import copy
import gzip
import io
import json

import pytest
import torch

import bayesprune as bp
from bayesprune.core import export, sparse_models

SHAPE, CLASSES = (1, 8, 8), 10


def _net(seed=0, hidden=(32, 16)):
    torch.manual_seed(seed)
    return bp.FCN(SHAPE, CLASSES, hidden)


def _pruned(sparsity, strategy="magnitude", seed=0):
    net = _net(seed)
    if strategy == "neuron":
        bp.prune_neurons(net, sparsity)
    else:
        bp.prune_magnitude(net, sparsity)
    return net


def _x(n=50, seed=1):
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ round trip
@pytest.mark.parametrize("encoding", ["auto", *export.ENCODINGS])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99])
def test_round_trip_gives_equal_tensors_and_equal_outputs(tmp_path, encoding, sparsity):
    net = _pruned(sparsity)
    n = export.export_sparse(net, tmp_path / "m.pt", encoding)
    assert n == (tmp_path / "m.pt").stat().st_size
    loaded = export.load_sparse(tmp_path / "m.pt", _net(seed=7))  # other weights, all overwritten
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with torch.inference_mode():
        assert torch.equal(loaded(_x()), net(_x()))


def test_zeros_of_either_sign_and_nans_survive_as_values():
    t = torch.tensor([[0.0, -0.0, 1.5, float("nan")], [-2.0, 0.0, 0.0, 3.0]])
    for name in export.ENCODINGS:
        back = export.SparseState.from_bytes(export.compress({"w": t}, name).to_bytes()).state_dict()["w"]
        assert torch.equal(back.isnan(), t.isnan()), name
        assert torch.equal(back.nan_to_num(), t.nan_to_num()), name  # -0.0 == 0.0: the same value


def test_bit_packing_against_numpy():
    np = pytest.importorskip("numpy")
    for n in (1, 7, 8, 9, 100):
        m = torch.rand(n, generator=torch.Generator().manual_seed(n)) > 0.5
        assert export.pack_bits(m).numpy().tobytes() == np.packbits(m.numpy()).tobytes()
        assert torch.equal(export.unpack_bits(export.pack_bits(m), n), m)


def test_csr_parts_match_torchs_own_csr():
    w = _pruned(0.9).fc1.weight.detach()
    parts = export.ENCODINGS["csr"].encode(w)
    ref = w.to_sparse_csr()
    assert torch.equal(parts["crow"].long(), ref.crow_indices())
    assert torch.equal(parts["col"].long(), ref.col_indices())
    assert torch.equal(parts["values"], ref.values())
    assert parts["col"].dtype == torch.uint8  # 64 columns: one byte per index


# ------------------------------------------------------------------ sizes, computed
def _payload(t, name):
    return export.payload_bytes(export.ENCODINGS[name].encode(t))


def test_sizes_follow_from_the_counts():
    w = _pruned(0.9).fc1.weight.detach()  # 32 x 64
    n, nnz = w.numel(), int((w != 0).sum())
    assert _payload(w, "dense") == 4 * n
    assert _payload(w, "bitmask") == -(-n // 8) + 4 * nnz
    assert _payload(w, "csr") == (w.shape[0] + 1) * 1 + nnz * 1 + 4 * nnz  # uint8 row pointers and columns (nnz < 256)


def test_auto_picks_the_smallest_encoding_for_each_tensor():
    for r in (0.0, 0.5, 0.95):
        net = _pruned(r)
        auto = export.compress(net)
        for k, t in net.state_dict().items():
            sizes = {name: _payload(t, name) for name in export.ENCODINGS}
            assert sizes[auto.encodings[k]] == min(sizes.values()), (r, k)
        assert auto.payload_bytes <= min(export.compress(net, e).payload_bytes for e in export.ENCODINGS)


def test_the_export_is_smaller_than_the_dense_file_and_than_gzip_at_high_sparsity():
    torch.manual_seed(0)
    net = bp.FCN((1, 28, 28), 10)  # the MNIST FCN: the file's fixed overhead (a few kB) is small beside it
    bp.prune_magnitude(net, 0.9)
    dense = export.dense_bytes(net)
    buf = io.BytesIO()
    torch.save(dict(net.state_dict()), buf)  # as the run folder's model.pt is written
    assert dense == len(buf.getvalue())
    sparse = len(export.compress(net).to_bytes())
    assert sparse < len(gzip.compress(buf.getvalue())) < dense
    # dense: no zeros to drop, the export costs only its small fixed overhead
    unpruned = _net()
    assert len(export.compress(unpruned).to_bytes()) < export.dense_bytes(unpruned) + 2048


def test_an_export_that_fails_leaves_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "m.pt"
    export.export_sparse(_pruned(0.5), p)
    before = p.read_bytes()

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        export.export_sparse(_pruned(0.9), p)
    assert p.read_bytes() == before and [q.name for q in tmp_path.iterdir()] == ["m.pt"]


def test_the_export_beats_torch_saving_its_own_sparse_tensors():
    torch.manual_seed(0)
    net = bp.FCN((1, 28, 28), 10)
    bp.prune_magnitude(net, 0.99)
    state = dict(net.state_dict())

    def saved(layout):
        buf = io.BytesIO()
        torch.save({k: (layout(v) if k.endswith("weight") else v) for k, v in state.items()}, buf)
        return len(buf.getvalue())

    ours = len(export.compress(net).to_bytes())
    assert ours < saved(torch.Tensor.to_sparse) and ours < saved(torch.Tensor.to_sparse_csr)
    assert export.dense_bytes(net) / ours >= 20  # the bar, which torch's COO file misses


def test_bad_input_names_what_is_allowed(tmp_path):
    with pytest.raises(ValueError, match="encoding='zip' is invalid: allowed auto, dense, bitmask, csr"):
        export.compress(_net(), "zip")
    p = tmp_path / "plain.pt"
    torch.save(_net().state_dict(), p)
    with pytest.raises(ValueError, match="not a bayesprune sparse export"):
        export.load_sparse(p)


# ------------------------------------------------------------------ CSR model, smaller FCN, FLOPs
def test_csr_model_matches_the_masked_model():
    net = _pruned(0.9)
    csr = sparse_models.to_csr(net)
    assert all(m.weight.layout == torch.sparse_csr for m in csr.modules() if isinstance(m, sparse_models.CSRLinear))
    with torch.inference_mode():
        torch.testing.assert_close(csr(_x()), net(_x()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.9])
def test_neuron_pruned_fcn_shrinks_and_gives_the_masked_outputs(sparsity):
    net = _pruned(sparsity, "neuron")
    small = sparse_models.shrink_fcn(net)
    keep = [32 - round(32 * sparsity), 16 - round(16 * sparsity)]
    assert [small.fc1.out_features, small.fc2.out_features] == keep
    assert small.fc2.in_features == keep[0] and small.fc3.in_features == keep[1] and small.fc3.out_features == CLASSES
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in net.parameters())
    with torch.inference_mode():
        a, b = small(_x()), net(_x())
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.equal(a.argmax(1), b.argmax(1))


def test_shrinking_folds_a_dead_neurons_bias_into_the_next_layer():
    net = _net()
    with torch.no_grad():
        net.fc1.weight[3] = 0.0
        net.fc1.bias[3] = 2.0  # a dead neuron that outputs relu(2) = 2 for every input
    small = sparse_models.shrink_fcn(net)
    assert small.fc1.out_features == 31
    with torch.inference_mode():
        torch.testing.assert_close(small(_x()), net(_x()), rtol=1e-5, atol=1e-6)


def test_shrinking_every_hidden_neuron_leaves_the_constant_output():
    net = _net()
    with torch.no_grad():
        net.fc1.weight.zero_()
    small = sparse_models.shrink_fcn(net)
    assert small.fc1.out_features == 0 and small.fc2.out_features == 0
    with torch.inference_mode():
        torch.testing.assert_close(small(_x()), net(_x()), rtol=1e-5, atol=1e-6)


def test_shrink_refuses_a_cnn():
    with pytest.raises(TypeError, match="not CNN"):
        sparse_models.shrink_fcn(bp.CNN(SHAPE, CLASSES))


def test_flops_count_the_kept_weights():
    net = _pruned(0.5)
    f = sparse_models.linear_flops(net)
    assert f["dense_flops"] == 2 * (64 * 32 + 32 * 16 + 16 * 10)
    assert f["sparse_flops"] == 2 * sum(int((w != 0).sum()) for w in bp.prunable_parameters(net).values())
    assert sparse_models.linear_flops(sparse_models.to_csr(net)) == f


# ------------------------------------------------------------------ the CLI's run folder
def test_train_out_writes_the_compact_model_and_both_sizes(tmp_path, cli_run):
    out = tmp_path / "run"
    code, _, err = cli_run("train", "--dataset", "digits", "--method", "magnitude", "--sparsity", "0.99",
                           "--epochs", "2", "--out", str(out))
    assert code == 0, err
    size = json.loads((out / "summary.json").read_text())["size"]
    assert size["model_pt_bytes"] == (out / "model.pt").stat().st_size
    assert size["sparse_bytes"] == (out / export.RUN_FILE).stat().st_size
    assert size["times_smaller"] == round(size["model_pt_bytes"] / size["sparse_bytes"], 2) > 10
    dense = torch.load(out / "model.pt", weights_only=True)
    back = export.load_sparse(out / export.RUN_FILE)
    assert dense.keys() == back.keys() and all(torch.equal(dense[k], back[k]) for k in dense)


def test_a_dense_runs_export_is_about_as_large_as_model_pt():
    net = copy.deepcopy(_net())
    data, size = export.for_run_folder(net)
    assert size["sparse_bytes"] == len(data) and 0.9 < size["times_smaller"] <= 1.0
