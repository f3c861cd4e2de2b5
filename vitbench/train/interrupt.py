"""Ctrl-C during Keras `fit` (`deferred`): training stops before its next call of the train
function starts, with a KeyboardInterrupt, and resumes from its last save when run again.

Keras 3 (as of 3.15) loses a KeyboardInterrupt raised while it reads logs back from the
device; here a save due at that step is made first, and a second Ctrl-C raises at once.
Design notes: docs/design/training.md.
"""

from __future__ import annotations

import contextlib
import signal
import threading

import keras


class RaiseOnInterrupt(keras.callbacks.Callback):
    """Raises KeyboardInterrupt before a train-function call starts once `pending` is set."""

    def __init__(self):
        super().__init__()
        self.pending = False

    def on_train_batch_begin(self, batch, logs=None):
        if self.pending:
            raise KeyboardInterrupt


@contextlib.contextmanager
def deferred():
    """Yields a `RaiseOnInterrupt` callback for a `fit` inside the block, during which SIGINT
    marks it instead of raising; an interrupt still pending at the block's end raises there.
    Python's own SIGINT handler is put back after the first Ctrl-C and after the block. Where
    SIGINT is not Python's default (ignored, handled by someone else) or outside the main
    thread, nothing changes.

    Yields:
        The `RaiseOnInterrupt` callback to pass to `fit`.

    Raises:
        KeyboardInterrupt: at the block's end, if a Ctrl-C is still pending there.
    """
    callback = RaiseOnInterrupt()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield callback
        return

    def mark(signum, frame):
        callback.pending = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second one raises

    signal.signal(signal.SIGINT, mark)
    try:
        yield callback
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if callback.pending:
        raise KeyboardInterrupt
