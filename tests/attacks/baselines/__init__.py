"""Tests of the related-work baselines (ML-CW, ML-DeepFool, MLA-LP) and the Table VII comparison."""
