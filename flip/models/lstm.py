"""NextCharLSTM: the character-level LSTM of McMahan et al. (2017) used on LEAF's Shakespeare."""

from torch import Tensor, nn


class NextCharLSTM(nn.Module):
    """Embedding (8) → 2-layer LSTM (hidden 256, batch first) → Linear on the last time step.

    Input ``(B, T)`` int64 character indices in ``0..vocab_size-1`` (T = 80 for LEAF's
    Shakespeare), output logits ``(B, num_classes)`` for the next character. ``vocab_size``
    defaults to ``num_classes`` (LEAF's 80-character vocabulary is both the input alphabet and
    the classes). No padding index: LEAF's windows are always full.
    Source: AutoFLIP (arXiv 2405.10271) §5 and its released code; LEAF's reference model
    (Caldas et al. 2018); McMahan et al. (2017).
    """

    def __init__(
        self,
        num_classes: int = 80,
        vocab_size: int | None = None,
        embedding_dim: int = 8,
        hidden_size: int = 256,
        num_layers: int = 2,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size or num_classes, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers=num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(self.embedding(x))
        return self.fc(out[:, -1])
