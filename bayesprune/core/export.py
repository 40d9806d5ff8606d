"""A pruned model on disk at the size its zeros allow, read back bit for bit.

``torch.save(model.state_dict())`` stores every zero: a 99 % sparse FCN is as large as
the dense one.  :func:`compress` stores each tensor in whichever of the
:data:`ENCODINGS` takes the fewest bytes *for that tensor*, measured, not estimated:

- ``dense``: the values as they are (biases, and weights with few zeros);
- ``bitmask``: one bit per entry (kept or not) plus the kept values; against ``dense`` it
  saves 4 bytes per zero and costs n/8 bytes, so it wins from 1/32 (3 %) zeros on (float32);
- ``csr``: compressed sparse rows (row pointers, column indices, values), with the
  indices in the smallest integer type that holds them (784 columns fit in int16).  Its
  index costs b bytes per *kept* entry where the bitmask costs 1/8 byte per entry, so it
  beats the bitmask only above 1 - 1/(8 b) sparsity: 87.5 % with uint8 indices (up to 256
  columns), 93.75 % with int16, 96.9 % with int32.

"Kept" means "not zero" (a NaN is kept).  A pruned weight is +0.0 or -0.0 (``w * 0``
keeps w's sign), and both are read back as +0.0: the tensors are equal value for value
(``torch.equal``) and so are the model's outputs, since adding a zero of either sign to a
non-zero sum changes nothing (an exactly-zero output may change the sign of its zero).
Keeping the signs of the zeros would cost one more bit per pruned weight.  The file is a
``torch.save`` of plain tensors, strings and integers (it loads under
``weights_only=True``).  CSR is not used *at inference* here: :func:`load_sparse` gives
dense tensors back (see :mod:`bayesprune.core.sparse_models` for the sparse kernels and
the physically smaller model).
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Union

import torch
from torch import nn

FORMAT = "bayesprune.sparse"
VERSION = 1

_INDEX_DTYPES = (torch.uint8, torch.int16, torch.int32, torch.int64)
_SHIFTS = torch.tensor([7, 6, 5, 4, 3, 2, 1, 0], dtype=torch.uint8)


def kept(t: torch.Tensor) -> torch.Tensor:
    """True where ``t`` is not zero (NaN included): the entries an encoding must store."""
    return t != 0


def index_dtype(largest: int) -> torch.dtype:
    """The smallest integer dtype that holds 0..``largest``."""
    for dt in _INDEX_DTYPES:
        if largest <= torch.iinfo(dt).max:
            return dt
    raise ValueError(f"an index of {largest} does not fit in int64")  # pragma: no cover


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as uint8 bytes, eight entries per byte, most significant bit first."""
    flat = mask.flatten().to(torch.uint8)
    pad = (-flat.numel()) % 8
    flat = torch.cat([flat, flat.new_zeros(pad)]).view(-1, 8)
    return (flat << _SHIFTS).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` entries of :func:`pack_bits`'s bytes, as bools."""
    return ((packed.view(-1, 1) >> _SHIFTS) & 1).flatten()[:n].bool()


# ------------------------------------------------------------------ encodings
def _encode_dense(t: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"values": t.contiguous()}


def _decode_dense(parts: Mapping[str, torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    return parts["values"].reshape(shape)


def _encode_bitmask(t: torch.Tensor) -> dict[str, torch.Tensor]:
    m = kept(t)
    return {"bits": pack_bits(m), "values": t[m].contiguous()}


def _decode_bitmask(parts: Mapping[str, torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    values = parts["values"]
    n = int(torch.Size(shape).numel())
    out = torch.zeros(n, dtype=values.dtype)
    out[unpack_bits(parts["bits"], n)] = values
    return out.reshape(shape)


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1) if t.dim() >= 1 else t.reshape(1, 1)


def _encode_csr(t: torch.Tensor) -> dict[str, torch.Tensor]:
    rows = _as_rows(t)
    m = kept(rows)
    crow = torch.zeros(rows.shape[0] + 1, dtype=torch.int64)
    crow[1:] = m.sum(dim=1).cumsum(0)
    col = m.nonzero()[:, 1]  # row-major order, as CSR wants
    return {"crow": crow.to(index_dtype(int(crow[-1]))),
            "col": col.to(index_dtype(max(rows.shape[1] - 1, 0))),
            "values": rows[m].contiguous()}


def _decode_csr(parts: Mapping[str, torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    crow, col, values = parts["crow"].long(), parts["col"].long(), parts["values"]
    n_rows = crow.numel() - 1
    n_cols = int(torch.Size(shape).numel()) // max(n_rows, 1)
    row = torch.repeat_interleave(torch.arange(n_rows), crow.diff())
    out = torch.zeros(n_rows, n_cols, dtype=values.dtype)
    out[row, col] = values
    return out.reshape(shape)


@dataclass(frozen=True)
class Encoding:
    """How one tensor is written: ``encode`` gives named plain tensors, ``decode`` reverses it exactly."""

    encode: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    decode: Callable[[Mapping[str, torch.Tensor], tuple[int, ...]], torch.Tensor]


#: name -> encoding; ``compress(encoding="auto")`` measures them all per tensor.  Order breaks ties.
ENCODINGS: dict[str, Encoding] = {
    "dense": Encoding(_encode_dense, _decode_dense),
    "bitmask": Encoding(_encode_bitmask, _decode_bitmask),
    "csr": Encoding(_encode_csr, _decode_csr),
}


def payload_bytes(parts: Mapping[str, torch.Tensor]) -> int:
    """Bytes of the tensors' data (what the encoding costs, without the file's fixed overhead)."""
    return sum(p.numel() * p.element_size() for p in parts.values())


# ------------------------------------------------------------------ the compressed state
@dataclass
class SparseState:
    """A state dict with each tensor in its chosen encoding; ``to_bytes`` is the file."""

    entries: dict[str, dict]

    @property
    def encodings(self) -> dict[str, str]:
        return {k: e["encoding"] for k, e in self.entries.items()}

    @property
    def payload_bytes(self) -> int:
        return sum(payload_bytes(e["parts"]) for e in self.entries.values())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The dense tensors, bit-identical to the ones compressed."""
        return {k: ENCODINGS[e["encoding"]].decode(e["parts"], tuple(e["shape"])) for k, e in self.entries.items()}

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save({"format": FORMAT, "version": VERSION, "entries": self.entries}, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "the data") -> "SparseState":
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ValueError(f"{source} is not a bayesprune sparse export (format {FORMAT!r}); "
                             "was it written by bayesprune.export_sparse?")
        if obj.get("version") != VERSION:
            raise ValueError(f"{source} is a sparse export of version {obj.get('version')!r}; "
                             f"this bayesprune reads version {VERSION}")
        unknown = {e["encoding"] for e in obj["entries"].values()} - set(ENCODINGS)
        if unknown:
            raise ValueError(f"{source} uses encodings {sorted(unknown)}: allowed {', '.join(ENCODINGS)}")
        return cls(obj["entries"])


def _state(model_or_state: Union[nn.Module, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    return {k: v.detach().cpu() for k, v in state.items()}


def compress(model_or_state: Union[nn.Module, Mapping[str, torch.Tensor]], encoding: str = "auto") -> SparseState:
    """Each tensor of the state dict in ``encoding``, or (``"auto"``) in the encoding that is smallest for it.

    Only floating-point tensors of two or more entries are candidates for ``bitmask`` and ``csr``.
    """
    if encoding != "auto" and encoding not in ENCODINGS:
        raise ValueError(f"encoding={encoding!r} is invalid: allowed auto, {', '.join(ENCODINGS)}")
    entries = {}
    for name, t in _state(model_or_state).items():
        names = ["dense"] if not t.is_floating_point() or t.numel() < 2 else (
            list(ENCODINGS) if encoding == "auto" else [encoding])
        tried = {n: ENCODINGS[n].encode(t) for n in names}
        best = min(tried, key=lambda n: payload_bytes(tried[n]))  # min keeps the first of equals
        entries[name] = {"encoding": best, "shape": list(t.shape), "parts": tried[best]}
    return SparseState(entries)


def export_sparse(model_or_state: Union[nn.Module, Mapping[str, torch.Tensor]], path: Union[str, os.PathLike],
                  encoding: str = "auto") -> int:
    """Write :func:`compress`'s file to ``path``; returns its size in bytes.

    Written to a temporary file beside ``path`` and renamed over it, so an interrupted export leaves
    whatever ``path`` held before.
    """
    data = compress(model_or_state, encoding).to_bytes()
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return len(data)


def load_sparse(path: Union[str, os.PathLike], model: Optional[nn.Module] = None):
    """The dense state dict of a sparse export; with ``model``, loaded into it (strictly) and the model returned."""
    with open(path, "rb") as f:
        state = SparseState.from_bytes(f.read(), source=str(path)).state_dict()
    if model is None:
        return state
    model.load_state_dict(state)
    return model


def dense_bytes(model_or_state: Union[nn.Module, Mapping[str, torch.Tensor]]) -> int:
    """Bytes of ``torch.save`` of the state dict: what ``model.pt`` holds, zeros included."""
    buf = io.BytesIO()
    torch.save(_state(model_or_state), buf)
    return len(buf.getvalue())


#: The compact model's file name in a run folder, beside ``model.pt``.
RUN_FILE = "model_sparse.pt"


def for_run_folder(model: nn.Module) -> tuple[bytes, dict]:
    """The compact file of a run folder and the ``size`` entry of its ``summary.json`` (both sizes, in bytes)."""
    state = compress(model)
    data = state.to_bytes()
    dense = dense_bytes(model)
    return data, {"model_pt_bytes": dense, "sparse_file": RUN_FILE, "sparse_bytes": len(data),
                  "times_smaller": round(dense / len(data), 2), "encodings": state.encodings}
