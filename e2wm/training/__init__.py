"""Training: configs, Fisher, EWC, the trainer, model resolution, general text, the recipe record, and the
text and video entry points."""
