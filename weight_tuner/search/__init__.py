"""Search stage: the Optuna study over class weights (one trial per weight vector, run by any process)."""
