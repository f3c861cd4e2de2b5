"""Pictures of what a ViT learned, as the paper draws them (`vitbench inspect`)."""
