"""Fine-tuning a cross-encoder for an index, in the order data flows: :mod:`.mining` (queries
and candidates from the live engine), :mod:`.teacher` (soft labels from the base checkpoint),
:mod:`.loop` (the training loop, saving a model the scorers load as-is)."""
