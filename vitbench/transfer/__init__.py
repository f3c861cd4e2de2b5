"""Transfer a checkpoint to a suite: `plan` (which runs), `methods` (fine-tuning, few-shot
probes, heads as released), `models` (the model a run starts from), `suite` (run, record,
resume) and `report` (the dry-run table), `stacking` (which runs train together). See
docs/design/transfer.md."""

# Runs per stack (`vitbench run --stack`): a sweep's four rates (plan.DEFAULT_SWEEP). Here,
# not in `stacking`, so that the command's flags are defined without loading Keras.
DEFAULT_STACK = 4
