"""Learngene selection: which layers of a collective model become the learngene. ``config`` holds
:class:`~learngene_hf.selection.config.SelectionConfig` and the criterion / strategy names (a
light module); ``criterion`` scores layers from the gradient record, ranks blocks and selects
(by rule or by few-shot probes); ``inheritor`` is the
:class:`~learngene_hf.selection.inheritor.Inheritor` that selects, extracts, saves and pushes the
learngene.
"""
