"""Few-shot training and comparison of individual models, by stage, each module importing only those before it:
``config`` (the recipe ``FewShotConfig`` and ``ComparisonConfig``, light), ``train`` (one model: train, evaluate,
build), ``stacks`` (many descendants held as one stacked network), ``stacked`` (training stacks, running descendant
jobs), ``runner`` (``Method``, ``run_episodes``, the learngene probes), ``tuning`` (recipe and fit-setting tuning on
open-world episodes), ``baselines`` (frozen-feature classifiers, weight selection), ``loading`` (the episodes' data
and the collective model), ``methods`` (the method catalog: blocks, baselines, sizes, ViT depths) and ``compare``
(``compare_methods``, sizes and depths, tables and files).
"""
