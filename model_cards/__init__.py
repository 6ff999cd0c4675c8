"""Model card templates (Jinja + YAML front matter), installed as ``learngene_hf.model_cards``."""
