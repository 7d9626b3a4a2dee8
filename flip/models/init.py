"""Weight initialisation of the global model θ_0."""

from torch import nn

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def init_weights(model: nn.Module, scheme: str = "xavier_normal") -> nn.Module:
    """Initialise Conv/Linear weights in place and zero their biases (ALGORITHMS.md §2.1, θ_0).

    ``scheme``: ``xavier_normal`` (the paper's code), ``kaiming_normal``, or ``default`` (keep
    PyTorch's own init). Normalisation layers keep weight 1, bias 0. Returns ``model``.
    Raises ``ConfigError`` for another scheme.
    """
    from flip.errors import ConfigError

    fns = {"xavier_normal": nn.init.xavier_normal_, "kaiming_normal": nn.init.kaiming_normal_}
    if scheme == "default":
        return model
    if scheme not in fns:
        raise ConfigError("model.init", scheme, "xavier_normal, kaiming_normal, default")
    for m in model.modules():
        if isinstance(m, _LAYERS):
            fns[scheme](m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
