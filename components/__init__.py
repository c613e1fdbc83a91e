"""Thin KFP components: each one parses the recipe, opens its MLflow run and calls one hala stage."""
