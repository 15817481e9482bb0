"""Deploy stage: what the decision is used as (ensemble, refits, single model), scored once on the test split."""
