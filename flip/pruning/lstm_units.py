"""Structured pruning of LSTM hidden units: scores, masks and physical compaction
(ALGORITHMS.md §2.2).

A structured unit of an LSTM is one hidden unit j of one layer k: its four gate rows
(``j, H+j, 2H+j, 3H+j``; gates i, f, g, o) in ``weight_ih_l{k}``, ``weight_hh_l{k}``,
``bias_ih_l{k}`` and ``bias_hh_l{k}``. Unit keys are ``f"{lstm_module_name}.l{k}"``
(:func:`unit_key`). Removing unit j of layer k zeroes its gate rows and its consumers' input
columns: column j of ``weight_hh_l{k}`` (the recurrence), of ``weight_ih_l{k+1}`` (the next
layer) or, for the last layer, of the Linear that reads the LSTM output.

Why the masked dense model and the compact model agree exactly: a unit whose gate rows and
biases are zero has i = f = o = σ(0) = 1/2 and g = tanh(0) = 0 at every step, so from the zero
initial state ``c_t = c_{t-1}/2 = 0`` and ``h_t = tanh(c_t)/2 = 0`` forever; its outgoing
columns are zero as well, so deleting it changes no other value, in the forward pass nor in any
gradient of a kept entry.

Why not Torch-Pruning (1.6.1): its LSTM pruner asserts ``num_layers == 1`` (and slices
``weight_hh_l0`` wrongly), and ``nn.LSTM`` has one ``hidden_size`` for all its layers, so
removing different units per layer needs a module with per-layer sizes: :class:`CompactLSTM`,
whose parameters keep ``nn.LSTM``'s names so a compact model's ``state_dict`` keys equal the
dense model's (only shapes shrink). Torch-Pruning's DependencyGraph does serve one thing here:
finding the Linears that read the LSTM output, when an example input is given
(:func:`lstm_consumers`).
"""

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GATES = 4
"""Gate blocks per LSTM layer in PyTorch's row order: input, forget, cell (g), output."""


def unit_key(lstm_name: str, layer: int) -> str:
    """The key of layer ``layer`` of the LSTM module named ``lstm_name``: ``"lstm.l0"``
    (``"l0"`` for an LSTM that is the model itself, name ``""``)."""
    return f"{lstm_name}.l{layer}" if lstm_name else f"l{layer}"


def gate_rows(units: Tensor | Sequence[int], hidden_size: int) -> Tensor:
    """The rows of a layer's weights and biases that belong to ``units``: int64
    ``(4·len(units),)``, gate-major (``units``, ``H + units``, ``2H + units``, ``3H + units``)."""
    u = torch.as_tensor(units, dtype=torch.long).reshape(-1)
    return torch.cat([u + g * hidden_size for g in range(GATES)])


class CompactLSTM(nn.Module):
    """A unidirectional multi-layer LSTM whose layers have their own hidden sizes.

    Drop-in for ``nn.LSTM(input_size, H, num_layers=len(hidden_sizes), bias, batch_first,
    dropout)`` after hidden units were removed (:func:`prune_lstm_units`). Parameters have
    exactly ``nn.LSTM``'s names and layouts: ``weight_ih_l{k}`` ``(4·H_k, I_k)``,
    ``weight_hh_l{k}`` ``(4·H_k, H_k)``, ``bias_ih_l{k}``/``bias_hh_l{k}`` ``(4·H_k,)``, with
    ``I_0 = input_size`` and ``I_k = H_{k-1}``; gate rows in PyTorch's order (i, f, g, o).

    ``forward(input, hx=None)``: ``input`` ``(B, T, I_0)`` if ``batch_first`` else
    ``(T, B, I_0)``, or unbatched ``(T, I_0)``. Returns ``(output, (h_n, c_n))`` with
    ``output`` the last layer's hidden states ``(B, T, H_last)`` / ``(T, B, H_last)`` /
    ``(T, H_last)``. Because the layers' sizes differ, ``h_n`` and ``c_n`` are TUPLES of one
    tensor per layer, element k ``(B, H_k)`` (``(H_k,)`` unbatched): ``h_n[k]`` is the kept
    part of ``nn.LSTM``'s ``h_n[k]``. ``hx``: ``None`` (zero initial state, the case the
    pruning guarantees) or ``(h_0, c_0)`` in the same per-layer tuple format.

    Each layer is one single-layer ``torch.lstm`` call (the op behind ``nn.LSTM``), so it runs
    cuDNN on CUDA (parameters are flattened per layer, as ``nn.LSTM.flatten_parameters`` does)
    and fvcore's ``aten::lstm`` handle (``flip.metrics.costs.recurrent_flop_jit``) counts
    ``4·H_k·(I_k + H_k)`` FLOPs per step and layer. Dropout, when > 0, is applied to every
    layer's output but the last in training, as in ``nn.LSTM``. PackedSequence inputs are not
    supported (``TypeError``). Source: ALGORITHMS.md §2.2.
    """

    def __init__(
        self,
        input_size: int,
        hidden_sizes: Sequence[int],
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        hidden_sizes = tuple(int(h) for h in hidden_sizes)
        if not hidden_sizes or min(hidden_sizes) < 1 or input_size < 1:
            raise ValueError(
                f"CompactLSTM needs input_size >= 1 and at least one layer, each with >= 1 "
                f"hidden unit; got input_size={input_size}, hidden_sizes={hidden_sizes}"
            )
        self.input_size = int(input_size)
        self.hidden_sizes = hidden_sizes
        self.num_layers = len(hidden_sizes)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        kw = {"device": device, "dtype": dtype}
        fan_in = self.input_size
        for k, h in enumerate(hidden_sizes):
            self.register_parameter(
                f"weight_ih_l{k}", nn.Parameter(torch.empty(GATES * h, fan_in, **kw))
            )
            self.register_parameter(
                f"weight_hh_l{k}", nn.Parameter(torch.empty(GATES * h, h, **kw))
            )
            if self.bias:
                self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(GATES * h, **kw)))
                self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(GATES * h, **kw)))
            fan_in = h
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(−1/√H_k, 1/√H_k) per layer, ``nn.LSTM``'s initialisation."""
        with torch.no_grad():
            for k, h in enumerate(self.hidden_sizes):
                for p in self.layer_params(k):
                    p.uniform_(-(h**-0.5), h**-0.5)

    def layer_params(self, k: int) -> list[Tensor]:
        """Layer k's parameters in ``torch.lstm``'s order: ``[w_ih, w_hh(, b_ih, b_hh)]``."""
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
        return [getattr(self, f"{n}_l{k}") for n in names]

    def flatten_parameters(self) -> None:
        """Put each layer's parameters into one contiguous cuDNN buffer (in place, as
        ``nn.LSTM.flatten_parameters``), so cuDNN does not copy them at every call. No-op
        off CUDA or when cuDNN cannot take them."""
        for k in range(self.num_layers):
            params = self.layer_params(k)
            first = params[0]
            if not all(
                p.is_cuda and p.dtype == first.dtype and torch.backends.cudnn.is_acceptable(p)
                for p in params
            ):
                return
            if len({p.data_ptr() for p in params}) != len(params):
                return
            import torch.backends.cudnn.rnn as cudnn_rnn

            with torch.cuda.device_of(first), torch.no_grad():
                if torch._use_cudnn_rnn_flatten_weight():
                    torch._cudnn_rnn_flatten_weight(
                        params,
                        len(params),
                        params[0].shape[1],
                        cudnn_rnn.get_cudnn_mode("LSTM"),
                        self.hidden_sizes[k],
                        0,
                        1,
                        self.batch_first,
                        False,
                    )

    def _apply(self, fn, recurse=True):
        ret = super()._apply(fn, recurse)
        self.flatten_parameters()
        return ret

    def forward(
        self,
        input: Tensor,
        hx: tuple[Sequence[Tensor], Sequence[Tensor]] | None = None,
    ) -> tuple[Tensor, tuple[tuple[Tensor, ...], tuple[Tensor, ...]]]:
        if not isinstance(input, Tensor):
            raise TypeError(f"CompactLSTM takes a padded Tensor input, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"CompactLSTM: expected a 2-D or 3-D input, got {input.dim()}-D")
        batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        x = input if batched else input.unsqueeze(batch_dim)
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"CompactLSTM: input size {x.shape[-1]} != input_size {self.input_size}"
            )
        b = x.shape[batch_dim]
        h_n, c_n = [], []
        for k, h in enumerate(self.hidden_sizes):
            if hx is None:
                h0 = c0 = torch.zeros(1, b, h, dtype=x.dtype, device=x.device)
            else:
                h0, c0 = (s[k] if batched else s[k].unsqueeze(0) for s in hx)
                h0, c0 = h0.unsqueeze(0), c0.unsqueeze(0)
            x, hk, ck = torch.lstm(
                x,
                [h0, c0],
                self.layer_params(k),
                self.bias,
                1,
                0.0,
                self.training,
                False,
                self.batch_first,
            )
            if self.dropout > 0 and self.training and k < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
            h_n.append(hk[0] if batched else hk[0, 0])
            c_n.append(ck[0] if batched else ck[0, 0])
        out = x if batched else x.squeeze(batch_dim)
        return out, (tuple(h_n), tuple(c_n))

    def extra_repr(self) -> str:
        s = f"{self.input_size}, hidden_sizes={self.hidden_sizes}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s


def _hidden_sizes(m: nn.Module) -> tuple[int, ...]:
    if isinstance(m, CompactLSTM):
        return m.hidden_sizes
    return (m.hidden_size,) * m.num_layers


def lstm_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every ``nn.LSTM`` and :class:`CompactLSTM` of ``model`` by module name (registration
    order). Raises ``ValueError`` for a bidirectional LSTM or one with ``proj_size`` > 0
    (their units are not supported)."""
    found = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.LSTM):
            if m.bidirectional or m.proj_size:
                raise ValueError(
                    f"LSTM {name!r}: structured unit pruning supports unidirectional LSTMs "
                    f"without projection, got bidirectional={m.bidirectional}, "
                    f"proj_size={m.proj_size}"
                )
            found[name] = m
        elif isinstance(m, CompactLSTM):
            found[name] = m
    return found


def _prefix(name: str) -> str:
    return f"{name}." if name else ""


@torch.no_grad()
def lstm_unit_scores(model: nn.Module, guidance: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Mean guidance G over each LSTM hidden unit's fan-in weights (ALGORITHMS.md §2.2).

    For every LSTM of ``model`` (``nn.LSTM`` or :class:`CompactLSTM`) and layer k, returns
    ``{unit_key(name, k): float64 (H_k,)}``: for unit j the mean of G over its four gate rows
    (j, H+j, 2H+j, 3H+j) of ``weight_ih_l{k}`` and of ``weight_hh_l{k}``, i.e. over
    ``4·(I_k + H_k)`` weights (biases are not fan-in weights). ``guidance`` is keyed by
    parameter names (``lstm.weight_ih_l0``) with the parameters' shapes. Raises ``ValueError``
    for a bidirectional / projected LSTM, ``KeyError`` for a missing guidance tensor.
    """
    scores = {}
    for name, m in lstm_layers(model).items():
        pre = _prefix(name)
        for k, h in enumerate(_hidden_sizes(m)):
            g_ih = guidance[f"{pre}weight_ih_l{k}"].detach().to("cpu", torch.float64)
            g_hh = guidance[f"{pre}weight_hh_l{k}"].detach().to("cpu", torch.float64)
            total = (g_ih.sum(1) + g_hh.sum(1)).reshape(GATES, h).sum(0)
            count = GATES * (g_ih.shape[1] + h)
            scores[unit_key(name, k)] = total / count
    return scores


def _parse_removal(
    model: nn.Module, removal: Mapping[str, Sequence[int]]
) -> dict[str, list[Tensor]]:
    """``{lstm name: [removed units of layer k (int64, sorted)] for each k}`` for the LSTMs
    the removal touches. Raises ``ValueError`` for an unknown key, an index out of range or
    repeated, or the removal of every unit of a layer."""
    layers = lstm_layers(model)
    keys = {unit_key(n, k): (n, k) for n, m in layers.items() for k in range(len(_hidden_sizes(m)))}
    out: dict[str, list[Tensor]] = {}
    for key, units in removal.items():
        if key not in keys:
            raise ValueError(f"unknown LSTM unit key {key!r}: the model's keys are {sorted(keys)}")
        name, k = keys[key]
        sizes = _hidden_sizes(layers[name])
        units = [int(i) for i in units]
        u = torch.as_tensor(units, dtype=torch.long).reshape(-1)
        if u.numel() == 0:
            continue
        if int(u.min()) < 0 or int(u.max()) >= sizes[k]:
            raise ValueError(f"{key}: unit indices must lie in 0..{sizes[k] - 1}, got {u.tolist()}")
        u = torch.unique(u)
        if u.numel() != len(units):
            raise ValueError(f"{key}: repeated unit indices in {units}")
        if u.numel() == sizes[k]:
            raise ValueError(
                f"{key}: cannot remove all {sizes[k]} hidden units of a layer (keep at least one)"
            )
        per_layer = out.setdefault(name, [torch.empty(0, dtype=torch.long) for _ in sizes])
        per_layer[k] = u
    return out


def _traced_consumers(model: nn.Module, lstm_name: str, example_input: Tensor) -> list[str]:
    """Consumers of an ``nn.LSTM``'s output from Torch-Pruning's DependencyGraph: every module
    whose input channels the LSTM's output channels are coupled to, which must be Linears
    reading them one to one."""
    import torch_pruning as tp

    names = {m: n for n, m in model.named_modules()}
    lstm = model.get_submodule(lstm_name)
    with torch.enable_grad():  # the graph is traced through autograd
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    units = list(range(lstm.hidden_size))
    group = graph.get_pruning_group(
        lstm, graph.get_pruner_of_module(lstm).prune_out_channels, units
    )
    found = []
    for item in group:
        mod, fn = item.dep.target.module, item.dep.handler.__name__
        if fn != "prune_in_channels" or mod not in names or mod is lstm:
            continue
        if not isinstance(mod, nn.Linear) or list(item.idxs) != units:
            raise ValueError(
                f"LSTM {lstm_name!r}'s output feeds {names[mod]!r} ({type(mod).__name__}) in a "
                "way unit pruning does not support (only Linears reading it one to one)"
            )
        found.append(names[mod])
    return list(dict.fromkeys(found))


def lstm_consumers(
    model: nn.Module, lstm_name: str, example_input: Tensor | None = None
) -> list[str]:
    """Names of the Linears that read the LSTM's output (the consumers of its last layer).

    With ``example_input`` (one batch for the model's forward) and an ``nn.LSTM``: traced by
    Torch-Pruning's DependencyGraph, which follows the output through indexing such as
    ``out[:, -1]`` and finds every consumer; they must be Linears reading the hidden units one
    to one. Otherwise (no example input, or a :class:`CompactLSTM`, which Torch-Pruning does
    not know) the rule: the module registered right after the LSTM in
    ``model.named_modules()`` is the consumer and must be an ``nn.Linear`` whose
    ``in_features`` equals the LSTM's last hidden size, as in ``NextCharLSTM``
    (embedding → lstm → fc). Raises ``ValueError`` when no consumer is found or one is not
    such a Linear (a last-layer removal is then not realisable).
    """
    mods = list(model.named_modules())
    idx = [n for n, _ in mods].index(lstm_name)
    lstm = mods[idx][1]
    h_last = _hidden_sizes(lstm)[-1]
    if example_input is not None and isinstance(lstm, nn.LSTM):
        found = _traced_consumers(model, lstm_name, example_input)
        if not found:
            raise ValueError(
                f"Torch-Pruning's DependencyGraph finds no Linear reading LSTM {lstm_name!r}'s "
                "output"
            )
        return found
    nxt = mods[idx + 1] if idx + 1 < len(mods) else None
    if nxt is None or not isinstance(nxt[1], nn.Linear) or nxt[1].in_features != h_last:
        got = "nothing" if nxt is None else f"{nxt[0]!r} ({type(nxt[1]).__name__})"
        raise ValueError(
            f"cannot find the consumer of LSTM {lstm_name!r}'s output: the module registered "
            f"after it must be an nn.Linear with in_features={h_last}, found {got} "
            "(or pass example_input to trace it)"
        )
    return [nxt[0]]


def lstm_unit_masks(
    model: nn.Module,
    removal: Mapping[str, Sequence[int]],
    example_input: Tensor | None = None,
) -> dict[str, Tensor]:
    """Bool masks (True = kept), one per parameter of ``model`` with its shape, that remove
    the LSTM hidden units in ``removal`` (ALGORITHMS.md §2.2).

    ``removal``: ``{unit_key(lstm_name, k): unit indices of layer k}``. For removed unit j of
    layer k (hidden size H) it zeroes rows ``j + g·H`` (g = 0..3) of ``weight_ih_l{k}``,
    ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``; column j of ``weight_hh_l{k}``;
    column j of ``weight_ih_l{k+1}``, or for the last layer column j of every consumer Linear's
    weight (:func:`lstm_consumers`; ``example_input``, optional, lets Torch-Pruning trace
    them). Raises ``ValueError`` for an unknown key, an index out of
    range or repeated, the removal of every unit of a layer, or a last-layer removal without a
    consumer.
    """
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    layers = lstm_layers(model)
    for name, removed in _parse_removal(model, removal).items():
        pre, sizes, lstm = _prefix(name), _hidden_sizes(layers[name]), layers[name]
        for k, u in enumerate(removed):
            if u.numel() == 0:
                continue
            rows = gate_rows(u, sizes[k])
            names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if lstm.bias else [])
            for w in names:
                masks[f"{pre}{w}_l{k}"][rows] = False
            masks[f"{pre}weight_hh_l{k}"][:, u] = False
            if k + 1 < len(sizes):
                masks[f"{pre}weight_ih_l{k + 1}"][:, u] = False
            else:
                for c in lstm_consumers(model, name, example_input):
                    masks[f"{_prefix(c)}weight"][:, u] = False
    return masks


def _kept(removed: Tensor, size: int) -> Tensor:
    keep = torch.ones(size, dtype=torch.bool)
    keep[removed] = False
    return torch.nonzero(keep).flatten()


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)


@torch.no_grad()
def prune_lstm_units(
    model: nn.Module,
    removal: Mapping[str, Sequence[int]],
    example_input: Tensor | None = None,
) -> None:
    """Physically remove the LSTM hidden units in ``removal``, in place (ALGORITHMS.md §2.2).

    Every LSTM the removal touches (``nn.LSTM`` or :class:`CompactLSTM`, by module name) is
    replaced by a :class:`CompactLSTM` holding the kept slices: layer k keeps the rows
    ``gate_rows(kept_k, H_k)``; its ``weight_ih_l{k}`` keeps the columns ``kept_{k-1}``
    (all input features for k = 0) and its ``weight_hh_l{k}`` the columns ``kept_k``. When
    the last layer loses units, every consumer Linear (:func:`lstm_consumers`;
    ``example_input``, optional, lets Torch-Pruning trace them) keeps only the input columns
    ``kept_last`` (its ``weight`` parameter is replaced, ``in_features`` updated; its bias is
    untouched). Values are only sliced (index_select), never recomputed,
    so any floating dtype works and entries tagged with their positions read back the index
    map. The new parameters keep device, dtype and ``requires_grad``; the new module keeps the
    training flag. Optimisers holding the old parameters must be rebuilt. With zero initial
    state, the result computes exactly what the model masked by :func:`lstm_unit_masks` does.
    Raises ``ValueError`` as :func:`lstm_unit_masks` does; a removal that is empty for an LSTM
    leaves it as it is.
    """
    layers = lstm_layers(model)
    todo = {n: r for n, r in _parse_removal(model, removal).items() if any(u.numel() for u in r)}
    # consumers first, on the model as it is (tracing needs every LSTM still an nn.LSTM)
    consumers_of = {
        n: lstm_consumers(model, n, example_input) if r[-1].numel() else [] for n, r in todo.items()
    }
    for name, removed in todo.items():
        old, consumers = layers[name], consumers_of[name]
        sizes = _hidden_sizes(old)
        kept = [_kept(u, h) for u, h in zip(removed, sizes, strict=True)]
        first = old.weight_ih_l0
        new = CompactLSTM(
            old.input_size,
            [len(c) for c in kept],
            bias=old.bias,
            batch_first=old.batch_first,
            dropout=old.dropout,
            device=first.device,
            dtype=first.dtype,
        )
        for k, (c, h) in enumerate(zip(kept, sizes, strict=True)):
            rows = gate_rows(c, h).to(first.device)
            cols_in = kept[k - 1].to(first.device) if k else None
            for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                p = getattr(old, f"{w}_l{k}", None)
                if p is None:
                    continue
                t = p.index_select(0, rows)
                if w == "weight_ih" and cols_in is not None:
                    t = t.index_select(1, cols_in)
                elif w == "weight_hh":
                    t = t.index_select(1, c.to(first.device))
                q = getattr(new, f"{w}_l{k}")
                q.data = t.contiguous()
                q.requires_grad_(p.requires_grad)
        new.flatten_parameters()
        new.train(old.training)
        _set_module(model, name, new)
        for consumer in consumers:
            fc = model.get_submodule(consumer)
            w = fc.weight
            fc.weight = nn.Parameter(
                w.index_select(1, kept[-1].to(w.device)), requires_grad=w.requires_grad
            )
            fc.in_features = len(kept[-1])
