"""Transfer a checkpoint to a suite: `plan` (which runs), `methods` (fine-tuning, few-shot
probes, heads as released), `models` (the model a run starts from), `suite` (run, record,
resume) and `report` (the dry-run table). See docs/design/transfer.md."""
