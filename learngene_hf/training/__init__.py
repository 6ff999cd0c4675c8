"""Collective training: a collective model learns a task stream, grows, and records its gradients.
``config`` holds :class:`~learngene_hf.training.config.CollectiveTrainingConfig` and the names it
is checked against (a light module); ``trainer`` runs it (:func:`~learngene_hf.training.trainer.train_collective`);
``growth`` plans and applies growth; ``loading`` loads the data and batches; ``evaluation`` scores
task accuracy and open-world AUROC; ``run`` is the run on disk (checkpoints,
:func:`~learngene_hf.training.run.load_run`); ``report`` writes the report and final outputs;
``record`` is the gradient record, ``ewc`` elastic weight consolidation, ``replay`` the replay
memory and ``openworld`` the open-world scores and class statistics.
"""
