"""weight-tuner: find class weights for an imbalanced line classifier with an Optuna study, and measure them."""

__version__ = "0.1.0"
