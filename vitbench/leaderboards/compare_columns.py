"""What each column of `vitbench compare`'s tables means: the pages' legend and the command's
`--help` (kept free of heavy imports, so that the CLI starts at once)."""

# Each column of the per-task table, and what it means (the page's legend and `--help`).
COLUMNS = {
    "task": "the board's column (few-shot: task and shot count)",
    "n": "test items, the same ordered items for both rows (checked by their labels' hash)",
    "seeds": "runs of A / of B (few-shot: shot draws, compared draw by draw)",
    "A %": "A's accuracy (mean over its runs)",
    "B %": "B's accuracy",
    "Δ pp": "A minus B, in percentage points",
    "95% CI": "95% interval of Δ: paired Wald with one run a side, else t with the seed and "
              "item variances together",
    "b": "items A got right and B wrong (the mean over pairs of runs where there are several)",
    "c": "items B got right and A wrong",
    "test": "exact McNemar (one run a side), seed+item t (independent fine-tuning seeds), "
            "paired-seed t (few-shot draws)",
    "p": "the test's two-sided p-value",
    "p Holm": "p adjusted over the board's compared tasks by Holm's step-down (family-wise "
              "error); with --adjust bh, `p BH`: Benjamini-Hochberg (false discovery rate)",
    "MDE pp": "the smallest |Δ| the test detects with power 0.8 at level 0.05, at this test "
              "size and disagreement: a difference below it cannot be told from noise",
    "verdict": "A better / B better where the adjusted p < 0.05, else no detectable "
               "difference",
}
MEAN_COLUMNS = {
    "mean": "a mean of the board (its tasks weighed as on the board)",
    "tasks": "tasks compared of the mean's tasks",
    "Δ pp": "A's mean minus B's",
    "95% CI": "percentile interval of a stratified paired bootstrap (items resampled within "
              "each task, A and B of an item together; with seeds, t with the seed variance "
              "added)",
    "p": "the bootstrap's two-sided p-value (with seeds: the t test's); not adjusted: the "
         "means are the primary comparison",
    "MDE pp": "the smallest |Δ| of the mean the comparison detects with power 0.8",
    "verdict": "as per task, on p",
}
