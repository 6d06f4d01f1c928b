"""The skorch callbacks every training estimator runs besides skorch's own defaults."""

from __future__ import annotations

from skorch.callbacks import Callback, EarlyStopping

__all__ = ["EarlyStoppingRecord", "ValidAccuracy"]


class ValidAccuracy(Callback):
    """Validation accuracy from the logits skorch already computed (no second pass)."""

    def on_epoch_begin(self, net, **kwargs):
        self.correct_, self.total_ = 0, 0

    def on_batch_end(self, net, batch, training, y_pred, **kwargs):
        if training:
            return
        y = batch[1]["y"] if isinstance(batch[1], dict) else batch[1]
        self.correct_ += int((y_pred.argmax(1).cpu() == y.cpu()).sum())
        self.total_ += len(y)

    def on_epoch_end(self, net, **kwargs):
        if self.total_:
            net.history.record("valid_acc", self.correct_ / self.total_)


class EarlyStoppingRecord(EarlyStopping):
    """skorch's early stopping, recording that it (not a Ctrl-C) ended training."""

    def on_train_begin(self, net, **kwargs):
        super().on_train_begin(net, **kwargs)
        self.stopped_ = False

    def on_epoch_end(self, net, **kwargs):
        try:
            super().on_epoch_end(net, **kwargs)
        except KeyboardInterrupt:
            self.stopped_ = True
            raise
