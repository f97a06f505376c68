"""Pure logic (no Prefect, no torch): segmentation, word->speaker assignment, fusion."""
