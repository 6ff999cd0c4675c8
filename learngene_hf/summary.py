"""The pipeline's summary: the markdown it prints and writes, and its JSON without per-episode rows."""

from __future__ import annotations

from typing import Any

__all__ = ["summary_markdown", "without_episodes"]


def _open_world_line(collective: dict[str, Any]) -> str:
    """The summary's line on forgetting and open-world recognition (AUROC of the score used)."""
    auroc, forgetting = collective.get("mean_open_world_auroc"), collective.get("mean_forgetting")
    line = f"- Mean forgetting {forgetting:.3f}; " if forgetting is not None else "- "
    if auroc is None:
        return line + "open-world AUROC not measured (one task only)."
    others = ", ".join(f"{k} {v:.3f}" for k, v in (collective.get("mean_open_world_aurocs") or {}).items())
    return (
        line + f"open-world AUROC {auroc:.3f} with the {collective['open_world_method']} score "
        f"(unknown: each new task's classes before it is learnt; known: held-out images of the learnt tasks; "
        f"all scores: {others}); read it with `model.open_world_score(images)`."
    )


def summary_markdown(summary: dict[str, Any]) -> str:
    """The pipeline's summary as markdown: stages, learngene, and one accuracy table per K."""
    from .fewshot.compare import format_table

    c, lg = summary["collective"], summary["learngene"]
    sizes = lg["sizes"]
    lines = [
        "# learngene-hf pipeline summary",
        "",
        f"- Collective model: preset `{c['preset']}`, {c['num_tasks']} tasks, mean accuracy after learning each task "
        f"{100 * c['mean_accuracy_after']:.1f}%, at the end {100 * c['mean_accuracy_end']:.1f}%, "
        f"{c['images_per_second']:.0f} images/s, {c['seconds']:.0f} s.",
        _open_world_line(c),
        f"- Learngene: layers {lg['layers']} at widths {lg.get('widths')} ({lg['position']}"
        f"{', distilled from the collective model' if lg.get('distilled') else ''}). {lg['reason']}",
        f"- Size: {sizes['learngene_parameters']:,} parameters ({sizes['learngene_bytes'] / 1e6:.2f} MB) = "
        f"{100 * sizes['parameter_fraction']:.1f}% of the collective model's {sizes['collective_parameters']:,}.",
    ]
    hub = summary.get("hub")
    if hub:
        lines.append(
            f"- Hub: pushed to `{hub['repo_id']}` at {hub['endpoint']} (commit {hub['commit_sha'][:10]}), "
            f"{hub['repo_bytes'] / 1e6:.2f} MB, push {hub['push_seconds']:.2f} s, pull {hub['pull_seconds']:.2f} s; "
            "the pulled tensors are identical."
        )
    for shots, result in summary["few_shot"].items():
        lines += ["", f"## {shots}-shot", "", format_table(result)]
    return "\n".join(lines) + "\n"


def without_episodes(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without per-episode rows (they are in each few_shot_*/results.json)."""
    slim = dict(summary)
    slim["few_shot"] = {k: {kk: vv for kk, vv in v.items() if kk != "episodes"} for k, v in summary["few_shot"].items()}
    return slim
